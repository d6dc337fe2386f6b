"""Render an Ollama TEMPLATE (a Go text/template) the way Ollama would, to compare it with the training template.

Only the constructs an Ollama prompt template needs are supported, which covers every template the
studio writes (studio.export.ollama): literal text, `{{ .Field }}` and `{{ $.Field }}`, `{{ range .Field }}`,
`{{ if .Field }}` / `{{ else if .Field }}` / `{{ else }}`, `{{ end }}`, comments, and the `{{- ` / ` -}}`
whitespace trims. The template is translated to a Jinja template and rendered by jinja2, so loops,
conditions and truthiness are a maintained library's, not hand-written; the trims are applied during the
translation because Go trims ASCII whitespace around an action, which Jinja's own `-` would not do for
text emitted as an expression. Anything else is a StudioError naming the construct.
"""

from __future__ import annotations

import re

from studio.errors import StudioError

_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.S)
_FIELD = re.compile(r"(\$?)\.([A-Za-z_][A-Za-z0-9_]*)")
_GO_SPACE = " \t\r\n"  # what text/template trims next to `{{- ` and ` -}}`


def render_go_template(template: str, messages: list[dict], system: str = "", prompt: str = "", where: str = "TEMPLATE") -> str:
    """What Ollama's prompt template renders for these messages (`.Messages` items carry `.Role` and `.Content`)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    source, texts = _translate(template, where)
    env = ImmutableSandboxedEnvironment(keep_trailing_newline=True, autoescape=False)
    scope = {
        "Messages": [{"Role": m["role"], "Content": m.get("content") or ""} for m in messages],
        "System": system,
        "Prompt": prompt,
        "Response": "",
    }
    return env.from_string(source).render(d0=scope, TEXTS=texts)


def _translate(template: str, where: str) -> tuple[str, list[str]]:
    """Jinja source for the Go template, with every literal text passed as TEXTS[i] (so no text needs escaping)."""
    pieces: list[list] = []  # ["text", str] or ["action", body]
    position = 0
    for match in _ACTION.finditer(template):
        pieces.append(["text", template[position : match.start()]])
        if match.group(1) and pieces[-1][1]:
            pieces[-1][1] = pieces[-1][1].rstrip(_GO_SPACE)
        pieces.append(["action", match.group(2), bool(match.group(3))])
        position = match.end()
    pieces.append(["text", template[position:]])
    for index, piece in enumerate(pieces):
        if piece[0] == "action" and piece[2]:
            pieces[index + 1][1] = pieces[index + 1][1].lstrip(_GO_SPACE)

    texts: list[str] = []
    out: list[str] = []
    blocks: list[str] = []  # "for" or "if", innermost last
    depth = 0  # the `.` of the innermost range is d{depth}
    for piece in pieces:
        if piece[0] == "text":
            if piece[1]:
                out.append(f"{{{{ TEXTS[{len(texts)}] }}}}")
                texts.append(piece[1])
            continue
        body = piece[1]
        words = body.split()
        if body.startswith("/*") and body.endswith("*/"):
            continue
        if words[:1] == ["range"] and len(words) == 2:
            out.append(f"{{% for d{depth + 1} in {_field(words[1], depth, where, body)} %}}")
            blocks.append("for")
            depth += 1
        elif words[:1] == ["if"] and len(words) == 2:
            out.append(f"{{% if {_field(words[1], depth, where, body)} %}}")
            blocks.append("if")
        elif words[:2] == ["else", "if"] and len(words) == 3 and blocks[-1:] == ["if"]:
            out.append(f"{{% elif {_field(words[2], depth, where, body)} %}}")
        elif words == ["else"] and blocks[-1:] == ["if"]:
            out.append("{% else %}")
        elif words == ["end"] and blocks:
            kind = blocks.pop()
            out.append("{% endfor %}" if kind == "for" else "{% endif %}")
            depth -= kind == "for"
        elif len(words) == 1:
            out.append(f"{{{{ {_field(words[0], depth, where, body)} }}}}")
        else:
            raise _unsupported(body, where)
    if blocks:
        raise StudioError(f"the Go template leaves a `{blocks[-1]}` block open (missing {{{{ end }}}})", where=where, fix="re-export to rewrite the Modelfile")
    return "".join(out), texts


def _field(expression: str, depth: int, where: str, body: str) -> str:
    match = _FIELD.fullmatch(expression)
    if not match:
        raise _unsupported(body, where)
    scope = "d0" if match.group(1) else f"d{depth}"
    return f'{scope}["{match.group(2)}"]'


def _unsupported(body: str, where: str) -> StudioError:
    return StudioError(
        f"the Go template action {{{{ {body} }}}} is not one the consistency check can render",
        where=where,
        fix="use the TEMPLATE `studio export --format ollama` writes (re-export), or check this template by hand with `ollama run`",
    )
