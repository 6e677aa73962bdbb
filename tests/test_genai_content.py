"""One definition of content: redaction, content sampling and storage agree on every dialect's keys.

Each test puts an e-mail address under every content key (the family key itself and a key under
it, as flattened dialects send them) and checks what each consumer does with it through its real
interface: the redaction processor, content sampling's strip, the storage row builder.
"""

from __future__ import annotations

import json

import pytest

from collector.model import Event
from exporters.storage.rows import SPAN_COLUMNS, RowBuilder, RowStats
from processors.genai_content import (
    CONTENT_EVENT_NAMES, CONTENT_KEY_FAMILIES, event_body_is_content, is_content_event_attribute,
    is_content_key,
)
from processors.genai_conventions import ATTRIBUTE_MAP, FLAT_MESSAGE_PREFIXES, MESSAGE_EVENT_ROLES, Conv
from processors.redaction import RedactionConfig, RedactionProcessor
from processors.sampling import strip_content
from tests.span_helpers import batch, span

PII = "reach me at dana.scully@fbi.example.com please"
EMAIL = "dana.scully@fbi.example.com"
# Keys every consumer must leave alone: model, tokens, cost, ids, timings.
METADATA = ("gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens", "gen_ai.usage.cost",
            "llm.token_count.prompt", "gen_ai.conversation.id", "gen_ai.tool.name", "input.mime_type",
            "gen_ai.prompt_tokens", "llm.model_name", "ai.model.id", "ai.usage.promptTokens",
            "langfuse.observation.model.name", "gen_ai.operation.name")


def content_attribute_keys() -> list[str]:
    """Every family key and one key under it (``gen_ai.prompt.0.content`` style)."""
    return [k for family in CONTENT_KEY_FAMILIES for k in (family, f"{family}.0.content")]


def pii_span():
    s = span(**{})
    for key in content_attribute_keys():
        s.attributes[key] = PII
    for key in METADATA:
        s.attributes[key] = "42"
    return s


def test_metadata_is_not_content_and_every_family_is():
    assert not any(is_content_key(k) for k in METADATA)
    assert all(is_content_key(k) for k in content_attribute_keys())
    # a key that only shares a prefix without the dot is not content
    assert not is_content_key("gen_ai.prompt_tokens") and not is_content_key("input.values")


def test_the_normalizer_reads_no_content_the_definition_misses():
    """Message attributes genai_normalize turns into messages are content by this definition."""
    message_keys = [k for k, (_f, conv, _p, _s) in ATTRIBUTE_MAP.items()
                    if conv in (Conv.MESSAGES, Conv.LEGACY_MESSAGES)]
    assert message_keys and all(is_content_key(k) for k in message_keys)
    assert all(is_content_key(prefix + "0.content") for prefix in FLAT_MESSAGE_PREFIXES)
    assert set(MESSAGE_EVENT_ROLES) <= CONTENT_EVENT_NAMES


def test_event_content_rule():
    assert is_content_event_attribute("gen_ai.user.message", "content")
    assert not is_content_event_attribute("gen_ai.choice", "finish_reason")
    assert is_content_event_attribute("gen_ai.client.inference.operation.details", "gen_ai.input.messages")
    assert not is_content_event_attribute("gen_ai.client.inference.operation.details", "gen_ai.request.model")
    assert not is_content_event_attribute("exception", "exception.type")
    assert event_body_is_content("gen_ai.assistant.message") and not event_body_is_content("exception")


def test_redaction_scans_every_content_key():
    processor = RedactionProcessor(RedactionConfig())
    s = pii_span()
    processor.process(batch(s))
    leaked = [k for k in content_attribute_keys() if EMAIL in str(s.attributes.get(k))]
    assert leaked == []
    assert all(s.attributes[k] == "reach me at <EMAIL_ADDRESS> please" for k in content_attribute_keys())
    assert all(s.attributes[k] == "42" for k in METADATA)


def test_redaction_failing_closed_drops_what_sampling_strips():
    """Both remove exactly the content keys (and content event attributes)."""
    a, b = pii_span(), pii_span()
    for s in (a, b):
        s.events.append(Event("gen_ai.user.message", 1, {"content": PII, "role": "user"}))
        s.events.append(Event("gen_ai.client.inference.operation.details", 2,
                              {"gen_ai.input.messages": PII, "gen_ai.request.model": "m"}))
    strip_content(a)
    RedactionProcessor(RedactionConfig())._drop_content(b, _Stats())
    b.attributes.pop("redaction.content.dropped")
    assert a.attributes == b.attributes == {k: "42" for k in METADATA}
    assert [e.attributes for e in a.events] == [e.attributes for e in b.events] == [
        {"role": "user"}, {"gen_ai.request.model": "m"}]


def test_storage_puts_every_content_key_in_the_content_column():
    row = dict(zip(SPAN_COLUMNS, RowBuilder(1 << 20).row(pii_span(), None, RowStats())))
    content = json.loads(row["content_attributes"])
    plain = json.loads(row["attributes"])
    assert sorted(content) == sorted(content_attribute_keys())
    assert sorted(plain) == sorted(METADATA)


@pytest.mark.parametrize("module", ["processors/redaction.py", "processors/sampling.py",
                                    "exporters/storage/schema.py", "exporters/storage/rows.py",
                                    "exporters/storage/retention.py"])
def test_no_second_list_of_content_keys(module):
    """Knowledge in one place: the consumers name no dialect content key themselves."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / module).read_text()
    code = [line for line in text.splitlines() if not line.lstrip().startswith(("#", "``", "-"))]
    named = [k for k in ("langfuse.observation.input", "ai.response.text", "traceloop.entity.input",
                         "llm.output_messages.", "\"input.value\"")
             if any(k in line for line in code)]
    assert named == []


class _Stats:
    def add(self, *args) -> None:
        pass
