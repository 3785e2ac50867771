"""`casegate notify check FILE` and `casegate notify preview EVENT`: validate a notification policy
with its templates the way the notifier does at start, and show what a notification looks like."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .domain.delivery import Medium
from .domain.facts import KNOWN_EVENTS, facts_of
from .domain.policy import Policy, notifications_for, templates_in_use
from .domain.policy_file import PolicyError, load_policy
from .domain.render import Renderer, TemplateProblem
from .domain.samples import SAMPLE_PUBLIC_URL, sample_event
from .domain.sms import segments

DEFAULT_POLICY = Path("config/notify.yaml")


def check_policy(policy: Policy, renderer: Renderer) -> list[str]:
    """Every problem with the policy's templates: missing or broken files, SMS texts too long."""
    in_use = templates_in_use(policy)
    problems = renderer.check(in_use)
    for name, media in sorted(in_use.items()):
        if Medium.SMS not in media:
            continue
        for language in sorted(p.name for p in renderer.root.iterdir() if p.is_dir()):
            if not renderer.exists(language, Medium.SMS, name, "txt"):
                continue
            problems.extend(_sms_length(policy, renderer, name, language))
    return list(dict.fromkeys(problems))  # a broken SMS template fails to compile and to render


def _sms_length(policy: Policy, renderer: Renderer, name: str, language: str) -> list[str]:
    facts = facts_of(sample_event(_event_using(policy, name), language))
    [n, *_] = notifications_for(policy, facts) or [None]
    if n is None:
        return []
    n = n.model_copy(update={"template": name, "language": language, "items": _digest_items(3)})
    try:
        text = renderer.render(n, Medium.SMS).text
    except TemplateProblem as exc:
        return [str(exc)]
    c = segments(text)
    if c.count > policy.sms_max_segments:
        return [
            f"{language}/sms/{name}.txt.j2: {c.count} segments "
            f"({c.encoding.value}, {c.units} units) "
            f"with sample values; the policy allows {policy.sms_max_segments}"
        ]
    return []


def _event_using(policy: Policy, template: str) -> str:
    for rule in policy.rules:
        if rule.template == template:
            return rule.events[0]
    return "case.reply_added"  # the reply and digest templates: any event reaching the customer


def _digest_items(count: int) -> tuple[dict[str, str], ...]:
    return tuple(
        {"ref": f"CS-7K3M9{i}", "summary": "Status resolved: Invoice", "occurred_at": "10:30"}
        for i in range(2, 2 + count)
    )


def _load(path: Path) -> Policy | None:
    try:
        return load_policy(path)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    policy = _load(args.file)
    if policy is None:
        return 1
    renderer = Renderer(default_language=policy.default_language, public_url=args.public_url)
    problems = check_policy(policy, renderer)
    for problem in problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {len(policy.rules)} rules, {len(templates_in_use(policy))} templates")
    return 0


def _preview(args: argparse.Namespace) -> int:
    policy = _load(args.policy)
    if policy is None:
        return 1
    medium = Medium(args.channel)
    event = sample_event(args.event, args.lang, args.status)
    found = notifications_for(policy, facts_of(event))
    if not found:
        print(f"the policy gives nobody a notification for {args.event}", file=sys.stderr)
        return 1
    renderer = Renderer(default_language=policy.default_language, public_url=args.public_url)
    shown: list[dict[str, Any]] = []
    for n in found:
        items = _digest_items(3) if n.digest else ()
        n = n.model_copy(update={"language": args.lang, "items": items})
        if n.digest:
            n = n.model_copy(update={"template": policy.digest_template})
        try:
            r = renderer.render(n, medium)
        except TemplateProblem as exc:
            print(f"{n.rule} ({n.audience}): {exc}", file=sys.stderr)
            return 1
        doc: dict[str, Any] = {"rule": n.rule, "to": n.audience, "template": n.template,
                               "language": r.language, "subject": r.subject, "text": r.text}
        if r.html:
            doc["html"] = r.html
        if r.blocks:
            doc["blocks"] = r.blocks
        if medium is Medium.SMS:
            c = segments(r.text)
            doc["sms"] = {"encoding": c.encoding.value, "units": c.units, "segments": c.count}
        shown.append(doc)
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    notify = subparsers.add_parser(
        "notify", help="notification policy and templates"
    ).add_subparsers(dest="notify_command", required=True)
    check = notify.add_parser("check", help="validate a policy file and its templates")
    check.add_argument("file", type=Path)
    public_url = {
        "default": SAMPLE_PUBLIC_URL,
        "help": "the base of the customer's tracking link, as CASEGATE_PUBLIC_URL "
        f"(default {SAMPLE_PUBLIC_URL}): SMS texts are counted with it",
    }
    check.add_argument("--public-url", **public_url)
    check.set_defaults(func=_check)
    preview = notify.add_parser("preview", help="render an event's notifications with sample data")
    preview.add_argument("event", choices=KNOWN_EVENTS, metavar="EVENT", help="e.g. case.opened")
    media = [m.value for m in Medium if m is not Medium.WEBHOOK]
    preview.add_argument("--channel", choices=media, default="email")
    preview.add_argument("--lang", default="en")
    preview.add_argument("--status", help="new status for case.status_changed (default resolved)")
    preview.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    preview.add_argument("--public-url", **public_url)
    preview.set_defaults(func=_preview)
