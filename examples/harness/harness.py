"""The task agent: triage one support ticket into a label and an action.

This file is the SURFACE of the harness study: proposals change it, and nothing else.
`evaluate.py` (locked) calls `triage(ticket, model)` once per ticket and checks the answer.

- `model` is None offline: the agent then decides with the keyword rules below, which
  are deterministic, and the UPPER_CASE numbers are knobs the `tune` proposer can move.
- With a model (HARNESS_API_KEY set; see README.md) the agent runs its tools, then asks the
  model with INSTRUCTIONS as the system prompt. The rules are then only the fallback.

Every intermediate decision is appended to `steps`; the evaluation writes them to the trace
of the ticket, which is what the proposer reads to learn why a ticket went wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

LABELS = ("billing", "bug", "account", "feature", "abuse")
ACTIONS = ("refund", "escalate", "reply", "close")

# --- the instructions the model reads (the system prompt in model mode) --------------------
INSTRUCTIONS = """\
You are a support triage agent. Read one customer ticket and answer with JSON:
{"label": <label>, "action": <action>}.

Labels: billing (charges, refunds, invoices, prices), bug (the product misbehaves),
account (logins, passwords, account settings), feature (requests for something new),
abuse (spam, scams, harassment).

Actions: refund (give the money back), escalate (a human specialist must look at it),
reply (answer the customer), close (nothing to do).

Refund small billing mistakes. Escalate anything serious. Answer everything else.
"""

# --- tools: which ones run, in this order (their results are facts for the decision) ------
TOOLS = ["amounts", "links", "words", "keyword_scores", "urgency", "security", "closing"]

# --- keyword lists --------------------------------------------------------------------------
KEYWORDS: dict[str, list[str]] = {
    "billing": ["charge", "charged", "invoice", "refund", "billed", "payment", "price",
                "plan", "card", "subscription", "receipt"],
    "bug": ["error", "bug", "broken", "crash", "not working", "fails", "slow", "wrong"],
    "account": ["password", "log in", "login", "account", "email", "username", "2fa",
                "admin", "sign in"],
    "feature": ["feature", "would love", "would be great", "please add", "suggestion",
                "any plans", "support"],
    "abuse": ["spam", "harass", "scam", "phishing", "fraud", "fake"],
}  # fmt: skip
REFUND_WORDS = ["refund", "twice", "double", "money back", "reverse", "duplicate"]
ESCALATE_BILLING_WORDS = ["lawyer", "legal"]
URGENT_WORDS = ["down", "outage", "data loss", "gone", "deleted", "security", "everyone",
                "all customers", "whole team", "production"]  # fmt: skip
SECURITY_WORDS = ["hacked", "wasn't me", "not me", "took over", "never been",
                  "didn't create", "unauthorized"]  # fmt: skip
SPAM_WORDS = ["guaranteed", "you have won"]
CLOSING_WORDS = ["thanks", "thank you", "never mind", "all good", "works now", "sorted"]
DEFAULT_LABEL = "bug"

# --- knobs (plain literals: the tuner rewrites them) ---------------------------------------
BILLING_WEIGHT = 1.0  # multiplies each label's keyword hits before the vote
BUG_WEIGHT = 1.0
ACCOUNT_WEIGHT = 1.0
FEATURE_WEIGHT = 1.0
ABUSE_WEIGHT = 0.5
REFUND_LIMIT_USD = 20.0  # refund billing mistakes up to this amount, escalate above it
URGENT_MIN_HITS = 3  # urgent words needed before a bug is escalated
SECURITY_MIN_HITS = 2  # security words needed before an account ticket is escalated
SPAM_MIN_LINKS = 4  # a ticket with this many links is spam
CLOSE_MAX_WORDS = 8  # a closing note ("thanks, works now") is at most this many words
# --------------------------------------------------------------------------------------------

Step = dict[str, Any]
Model = Callable[[str, str], str]


def _hits(text: str, words: list[str]) -> list[str]:
    return [w for w in words if w in text]


def run_tools(text: str, body: str) -> dict[str, Any]:
    """The facts the decision is made from; only the tools named in TOOLS run."""
    tools: dict[str, Callable[[], Any]] = {
        "amounts": lambda: [
            float(m.replace(",", "")) for m in re.findall(r"\$\s?(\d[\d,]*(?:\.\d+)?)", text)
        ],
        "links": lambda: len(re.findall(r"https?://|www\.", text)),
        "words": lambda: len(body.split()),
        "keyword_scores": lambda: {
            label: len(_hits(text, words)) for label, words in KEYWORDS.items()
        },
        "urgency": lambda: _hits(text, URGENT_WORDS),
        "security": lambda: _hits(text, SECURITY_WORDS),
        "closing": lambda: _hits(text, CLOSING_WORDS),
    }
    return {name: tools[name]() for name in TOOLS if name in tools}


def classify(text: str, facts: dict[str, Any], steps: list[Step]) -> str:
    if facts.get("links", 0) >= SPAM_MIN_LINKS or _hits(text, SPAM_WORDS):
        steps.append({"rule": "spam", "links": facts.get("links", 0)})
        return "abuse"
    weights = {"billing": BILLING_WEIGHT, "bug": BUG_WEIGHT, "account": ACCOUNT_WEIGHT,
               "feature": FEATURE_WEIGHT, "abuse": ABUSE_WEIGHT}  # fmt: skip
    hits = facts.get("keyword_scores", {})
    votes = {label: hits.get(label, 0) * weights[label] for label in LABELS}
    best = max(LABELS, key=lambda label: votes[label])  # ties: the first in LABELS
    label = best if votes[best] > 0 else DEFAULT_LABEL
    steps.append({"rule": "keyword vote", "votes": votes, "label": label})
    return label


def choose_action(label: str, text: str, facts: dict[str, Any], steps: list[Step]) -> str:
    words = facts.get("words", len(text.split()))
    if facts.get("closing") and words <= CLOSE_MAX_WORDS:
        steps.append({"rule": "closing note", "words": words, "action": "close"})
        return "close"
    if label == "abuse":
        spam = facts.get("links", 0) >= SPAM_MIN_LINKS or bool(_hits(text, SPAM_WORDS))
        action = "close" if spam else "escalate"
        steps.append({"rule": "abuse: spam is closed, reports escalated", "action": action})
        return action
    if label == "billing":
        amounts = facts.get("amounts", [])
        if _hits(text, ESCALATE_BILLING_WORDS):
            action = "escalate"
        elif _hits(text, REFUND_WORDS) and amounts:
            action = "refund" if max(amounts) <= REFUND_LIMIT_USD else "escalate"
        else:
            action = "reply"
        steps.append({"rule": "billing", "amounts": amounts, "action": action})
        return action
    if label == "bug":
        urgent = facts.get("urgency", [])
        action = "escalate" if len(urgent) >= URGENT_MIN_HITS else "reply"
        steps.append({"rule": "bug urgency", "urgent": urgent, "action": action})
        return action
    if label == "account":
        security = facts.get("security", [])
        action = "escalate" if len(security) >= SECURITY_MIN_HITS else "reply"
        steps.append({"rule": "account security", "security": security, "action": action})
        return action
    steps.append({"rule": "default", "action": "reply"})
    return "reply"


def ask_model(model: Model, ticket: dict[str, str], facts: dict[str, Any],
              steps: list[Step]) -> tuple[str, str] | None:  # fmt: skip
    """The model's (label, action), or None when its answer is unusable."""
    user = (
        f"Subject: {ticket['subject']}\n\n{ticket['body']}\n\n"
        f"Facts from tools: {json.dumps(facts)}\n\nAnswer with the JSON object only."
    )
    reply = model(INSTRUCTIONS, user)
    steps.append({"tool": "model", "reply": reply[:500]})
    match = re.search(r"\{.*\}", reply, re.S)
    try:
        answer = json.loads(match.group(0)) if match else {}
    except json.JSONDecodeError:
        answer = {}
    label, action = answer.get("label"), answer.get("action")
    if label in LABELS and action in ACTIONS:
        return label, action
    steps.append({"rule": "model answer unusable, falling back to the rules"})
    return None


def triage(ticket: dict[str, str], model: Model | None = None) -> dict[str, Any]:
    """`ticket` has `subject` and `body`; returns `label`, `action` and the `steps` taken."""
    text = f"{ticket['subject']}\n{ticket['body']}".lower()
    steps: list[Step] = []
    facts = run_tools(text, ticket["body"])
    steps.append({"tool": "facts", **facts})
    answer = ask_model(model, ticket, facts, steps) if model is not None else None
    if answer is None:
        label = classify(text, facts, steps)
        answer = label, choose_action(label, text, facts, steps)
    return {"label": answer[0], "action": answer[1], "steps": steps}
