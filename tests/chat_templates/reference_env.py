"""The reference chat-template renderer: Jinja2 set up as transformers' apply_chat_template sets it up
(transformers/utils/chat_template_utils.py): ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[AssistantTracker, loopcontrols]), a tojson filter that is json.dumps(ensure_ascii=False, indent=...),
and the globals raise_exception and strftime_now. Variables: the tokenizer's special tokens, then messages, tools,
documents, add_generation_prompt and any other keys of the conversation (transformers' **kwargs).

render() returns (True, text) or (False, error message).
"""
import json
from datetime import datetime

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class AssistantTracker(Extension):
    """transformers' {% generation %} ... {% endgeneration %}: renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_generation_support")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def compile_template(source):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def continue_final(rendered, messages):
    """transformers' continue_final_message: cut the text right after the final message's content."""
    final_message = messages[-1]["content"]
    if isinstance(final_message, (list, tuple)):
        for block in reversed(final_message):
            if "text" in block:
                final_message = block["text"]
                break
        else:
            raise ValueError("continue_final_message: no text in the final message")
    if final_message.strip() not in rendered:
        raise ValueError("continue_final_message: the final message does not appear in the rendered chat")
    loc = rendered.rindex(final_message.strip())
    if rendered[loc: loc + len(final_message.lstrip())] == final_message:
        return rendered[: loc + len(final_message.lstrip())]
    return rendered[: loc + len(final_message.strip())]


def render(source, conversation, tokens, add_generation_prompt=True, enable_thinking=None,
           continue_final_message=False):
    try:
        kwargs = dict(tokens)
        for k, v in conversation.items():
            if k not in ("messages", "tools", "documents"):
                kwargs[k] = v
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        template = compile_template(source)
        text = template.render(messages=conversation["messages"], tools=conversation.get("tools"),
                               documents=conversation.get("documents"),
                               add_generation_prompt=add_generation_prompt, **kwargs)
        if continue_final_message:
            text = continue_final(text, conversation["messages"])
        return True, text
    except Exception as e:  # noqa: BLE001 — any failure of the template is a refusal to compare
        return False, "%s: %s" % (type(e).__name__, e)
