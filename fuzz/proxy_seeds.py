"""Seeds of the proxy_sse fuzz target: OpenAI chat and Responses bodies, as
JSON and as event streams, each behind the target's mode byte (bit 0: the
Responses API, bit 1: an event stream, bit 2: the whole call recorded). Run by fuzz/seeds.sh."""

import json
import os
import sys


def chunk(v):
    return "data: " + json.dumps(v) + "\n\n"


def main(out):
    os.makedirs(out, exist_ok=True)
    chat = chunk({"id": "c-1", "model": "m-1", "prompt_token_ids": [1, 2],
                  "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "token_ids": [7]}]})
    chat += chunk({"id": "c-1", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_9", "type": "function", "function": {"name": "ls", "arguments": "{\"pa"}}]},
        "token_ids": [8]}]})
    # One event split over two data lines, with CRLF line ends.
    chat += "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":\r\n"
    chat += "data: [{\"index\":0,\"function\":{\"arguments\":\"th\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\r\n\r\n"
    chat += chunk({"id": "c-1", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5,
                   "total_tokens": 16, "prompt_tokens_details": {"cached_tokens": 3}}})
    chat += "data: [DONE]\n\n"
    plain = {"id": "c-2", "model": "m", "prompt_token_ids": [1], "response_token_ids": [[5, 6], [9]],
             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}]}
    request = {"model": "m", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"}],
        "tools": [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}],
        "temperature": 0.2, "max_tokens": 9, "stream": True}
    done = {"id": "resp_1", "model": "m", "status": "completed", "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a.txt"}]},
        {"type": "function_call", "call_id": "fc_2", "name": "cat", "arguments": "{\"f\":\"a.txt\"}"}],
        "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}}
    stream = ("event: response.created\ndata: "
              + json.dumps({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
              + "\n\nevent: response.completed\ndata: "
              + json.dumps({"type": "response.completed", "response": done}) + "\n\n")
    responses_request = {"model": "m", "instructions": "be brief", "max_output_tokens": 9, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "list files"}]},
        {"type": "reasoning", "summary": []},
        {"type": "function_call", "call_id": "fc_1", "name": "ls", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "fc_1", "output": "a.txt"}],
        "tools": [{"type": "function", "name": "ls", "parameters": {"type": "object"}}]}
    # What `fuzz/run.sh 300` found: a tool-call index that made the
    # reassembly push empty objects until memory ran out.
    huge_index = chunk({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 8888888888881, "id": "call_1", "function": {"name": "ls", "arguments": "{}"}}]}}]})
    seeds = {
        "chat-stream": (2, chat),
        "chat-stream-huge-index": (2, huge_index),
        "chat-call-recorded": (6, chat),
        "chat-json": (0, json.dumps(plain)),
        "chat-request": (0, json.dumps(request)),
        "responses-stream": (3, stream),
        "responses-json": (1, json.dumps(done)),
        "responses-request": (1, json.dumps(responses_request)),
    }
    for name, (mode, body) in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([mode]) + body.encode())


if __name__ == "__main__":
    main(sys.argv[1])
