import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from delivery_server.errors import PermanentError
from delivery_server.models import Template
from delivery_server.renderer import Renderer


def template(**kw: str | None) -> Template:
    base: dict[str, object] = {
        "name": "statement",
        "locale": "en",
        "version": 1,
        "subject": "Statement for {{ name }}",
        "text_body": "Dear {{ name }}, your balance is {{ balance }}.",
        "html_body": "<p>Dear {{ name }}</p>",
    }
    base.update(kw)
    return Template(**base)  # type: ignore[arg-type]


def test_renders_each_part_with_the_recipients_variables() -> None:
    out = Renderer().render(template(), {"name": "Ada", "balance": "12.00"})
    assert out.subject == "Statement for Ada"
    assert out.text_body == "Dear Ada, your balance is 12.00."
    assert out.html_body == "<p>Dear Ada</p>"


def test_html_escapes_variables_but_text_does_not() -> None:
    out = Renderer().render(template(), {"name": "<b>Ada</b>", "balance": "1"})
    assert out.html_body == "<p>Dear &lt;b&gt;Ada&lt;/b&gt;</p>"
    assert "<b>Ada</b>" in out.text_body


def test_a_missing_variable_is_permanent_and_named() -> None:
    with pytest.raises(PermanentError, match="balance"):
        Renderer().render(template(), {"name": "Ada"})


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_the_sandbox_refuses_python_internals(body: str) -> None:
    with pytest.raises(PermanentError):
        Renderer().render(template(text_body=body), {"name": "x", "balance": "1"})


def test_rendered_size_is_capped() -> None:
    bomb = template(text_body="{% for i in range(100000) %}{{ name }}{% endfor %}")
    with pytest.raises(PermanentError, match="over the"):
        Renderer(max_bytes=10_000).render(bomb, {"name": "0123456789", "balance": "1"})


def test_a_subject_cannot_carry_a_line_break_from_a_variable() -> None:
    with pytest.raises(PermanentError, match="line break"):
        Renderer().render(template(), {"name": "x\r\nBcc: evil@example.com", "balance": "1"})


def test_syntax_errors_are_permanent_with_a_line_number() -> None:
    with pytest.raises(PermanentError, match="line 1"):
        Renderer().render(template(text_body="{{ name "), {"name": "x"})


def test_compiled_templates_are_cached_per_version() -> None:
    renderer = Renderer()
    renderer.render(template(), {"name": "a", "balance": "1"})
    out = renderer.render(
        template(version=2, subject="v2 {{ name }}"), {"name": "a", "balance": "1"}
    )
    assert out.subject == "v2 a"


@pytest.mark.parametrize(
    "body",
    [
        "{{ d.amount }} {{ d.label }}",
        "{{ d.items }}",  # a key named like a dict method: the method, as Jinja does
        "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
        "{{ d['items'] }} {{ d.get('amount') }} {{ d.missing is defined }}",
        "{% for line in lines %}{{ line.date }} {{ line.amount }}\n{% endfor %}",
    ],
)
def test_attribute_lookups_on_variables_find_what_the_plain_sandbox_finds(body: str) -> None:
    variables = {
        "d": {"amount": 12.5, "label": "Card", "items": "x"},
        "lines": [{"date": "2025-12-05", "amount": -3}, {"date": "2025-12-10", "amount": 7}],
    }
    plain = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    expected = plain.from_string(body).render(variables)

    rendered = Renderer().render(template(subject="s", text_body=body, html_body=None), variables)

    assert rendered.text_body == expected
