"""Emit spans with the OpenTelemetry Python SDK to oclagl, and write a manifest
of what was sent, converted to AGL Span JSON by AGL's own code (the oracle).

usage: send_spans.py grpc|http ENDPOINT MANIFEST_OUT TAG
"""
import json
import sys

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from agentlightning.types import Span

protocol, endpoint, manifest_path, tag = sys.argv[1:5]


def exporter():
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")

expected = {}  # span_id -> (rollout_id, attempt_id or None)
statuses = {}  # rollout_id -> expected rollout status


def provider(resource_attrs):
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": f"oclagl-test-{tag}", **resource_attrs}))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tp.add_span_processor(BatchSpanProcessor(exporter()))
    return tp, memory


# Rollout A: ids on the root span only; children end (and are exported) first.
rollout_a, attempt_a = f"ro-{tag}a" + "0" * (11 - len(tag)), "at-0000000a"
tp_a, mem_a = provider({})
tr = tp_a.get_tracer("oclagl.test")
with tr.start_as_current_span("rollout", attributes={"oclagl.task_input": json.dumps({"prompt": "What is 2+2?"})}) as root:
    root.set_attribute("agentlightning.rollout_id", rollout_a)
    root.set_attribute("agentlightning.attempt_id", attempt_a)
    with tr.start_as_current_span("gen_ai", kind=trace.SpanKind.CLIENT) as llm:
        llm.set_attribute("gen_ai.prompt.0.role", "user")
        llm.set_attribute("gen_ai.prompt.0.content", "What is 2+2? ünïcødé ✓")
        llm.set_attribute("gen_ai.completion.0.role", "assistant")
        llm.set_attribute("gen_ai.completion.0.content", "4")
        llm.set_attribute("gen_ai.usage.prompt_tokens", 12)
        llm.set_attribute("temperature", 0.25)
        llm.set_attribute("stream", False)
        llm.set_attribute("prompt_token_ids", [1, 2, 3])
        llm.set_attribute("tags", ["a", "b"])
        llm.add_event("chunk", {"index": 1, "text": "4"})
    other = tr.start_span("unrelated-linked", context=Context())
    other.end()
    with tr.start_as_current_span("tool", links=[Link(other.get_span_context(), {"why": "test"})]) as tool:
        tool.set_status(Status(StatusCode.ERROR, "tool failed"))
    root.set_status(Status(StatusCode.OK))
for s in mem_a.get_finished_spans():
    if s.name == "unrelated-linked":
        # A root span of its own trace: a trace-derived rollout.
        t = format(s.get_span_context().trace_id, "032x")
        expected[format(s.get_span_context().span_id, "016x")] = ("ro-" + t[20:], "at-" + t[12:20])
        statuses["ro-" + t[20:]] = "succeeded"
    else:
        expected[format(s.get_span_context().span_id, "016x")] = (rollout_a, attempt_a)
statuses[rollout_a] = "succeeded"

# Rollout B: ids on the resource (AGL's exporter style); the root fails.
rollout_b, attempt_b = f"ro-{tag}b" + "0" * (11 - len(tag)), "at-0000000b"
tp_b, mem_b = provider({"agentlightning.rollout_id": rollout_b, "agentlightning.attempt_id": attempt_b})
tr = tp_b.get_tracer("oclagl.test")
with tr.start_as_current_span("rollout") as root:
    with tr.start_as_current_span("agentlightning.message") as msg:
        msg.set_attribute("agentlightning.message.body", "Hello!")
    root.set_status(Status(StatusCode.ERROR, "gateway returned 503"))
for s in mem_b.get_finished_spans():
    expected[format(s.get_span_context().span_id, "016x")] = (rollout_b, attempt_b)
statuses[rollout_b] = "failed"

# A native trace that names no rollout (like the gateway's own spans).
tp_c, mem_c = provider({})
tr = tp_c.get_tracer("openclaw")
with tr.start_as_current_span("openclaw.run"):
    with tr.start_as_current_span("openclaw.model.call") as call:
        call.set_attribute("gen_ai.request.model", "mock-1")
for s in mem_c.get_finished_spans():
    t = format(s.get_span_context().trace_id, "032x")
    expected[format(s.get_span_context().span_id, "016x")] = ("ro-" + t[20:], "at-" + t[12:20])
    statuses["ro-" + t[20:]] = "succeeded"

for tp in (tp_a, tp_b, tp_c):
    tp.force_flush()
    tp.shutdown()

oracle = []
for mem in (mem_a, mem_b, mem_c):
    for s in mem.get_finished_spans():
        rollout, attempt = expected[format(s.get_span_context().span_id, "016x")]
        oracle.append(Span.from_opentelemetry(s, rollout_id=rollout, attempt_id=attempt, sequence_id=0).model_dump())
with open(manifest_path, "w") as f:
    json.dump({"spans": oracle, "statuses": statuses}, f)
print(f"sent {len(oracle)} spans over {protocol}")
