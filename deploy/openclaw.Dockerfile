# The OpenClaw gateway (npm), on a Node version it supports.
FROM node:24-bookworm-slim
RUN npm install -g openclaw@2026.9.6
ENTRYPOINT ["openclaw"]
CMD ["gateway", "run"]
