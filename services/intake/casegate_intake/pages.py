"""The HTML a person sees: the web form, its thank-you page and its refusal page.

Plain, accessible markup with no script; every value placed in a page is escaped.
"""

from __future__ import annotations

from html import escape

from .adapters.webform import HONEYPOT_FIELD

# Served with every page: nothing but our inline style may load, and forms post only to us.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_STYLE = (
    "body{font:1rem/1.5 system-ui,sans-serif;max-width:38rem;margin:2rem auto;padding:0 1rem}"
    "label{display:block;margin-top:1rem;font-weight:600}"
    "input,textarea{display:block;width:100%;box-sizing:border-box;font:inherit;padding:.4rem}"
    ".hint{font-weight:400}.trap{position:absolute;left:-10000px}"
    "button{margin-top:1.5rem;font:inherit;padding:.5rem 1.5rem}"
)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )


# The action is relative so the form keeps working behind a path prefix.
WEBFORM_PAGE = _page(
    "Contact support",
    f"""<form method="post" action="v1/webform" accept-charset="utf-8">
<label for="name">Your name <span class="hint">(required)</span></label>
<input id="name" name="name" required maxlength="200" autocomplete="name">
<label for="email">Email address <span class="hint">(required)</span></label>
<input id="email" name="email" type="email" required autocomplete="email">
<label for="phone">Phone <span class="hint">(optional, international format such as
+44 20 7946 0958)</span></label>
<input id="phone" name="phone" type="tel" autocomplete="tel">
<label for="subject">Subject <span class="hint">(required)</span></label>
<input id="subject" name="subject" required maxlength="300">
<label for="message">How can we help? <span class="hint">(required)</span></label>
<textarea id="message" name="message" required maxlength="20000" rows="10"></textarea>
<div class="trap" aria-hidden="true">
<label for="{HONEYPOT_FIELD}">Leave this field empty</label>
<input id="{HONEYPOT_FIELD}" name="{HONEYPOT_FIELD}" tabindex="-1" autocomplete="off">
</div>
<button type="submit">Send</button>
</form>""",
)


def thank_you_page(ref: str) -> str:
    return _page(
        "Thank you, we received your message",
        f"<p>Your case reference is <strong>{escape(ref)}</strong>. Please quote it when you "
        "contact us about this request. We will reply by email.</p>",
    )


def refusal_page(reason: str, fields: dict[str, str] | None = None) -> str:
    items = "".join(
        f"<li>{escape(name)}: {escape(problem)}</li>"
        for name, problem in sorted((fields or {}).items())
    )
    problems = f"<ul>{items}</ul>" if items else ""
    return _page(
        "We could not accept your message",
        f'<p role="alert">{escape(reason)}</p>{problems}'
        '<p><a href="../webform">Back to the form</a></p>',
    )
