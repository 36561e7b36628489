"""Promotion gate for rpo-exporter: refuse to promote the standby unless the
failover verdict is GO, measured now.

Run it as the first step of the promotion (a Step Functions task before the
promotion Lambda, or called by that Lambda). It asks one or both of:

- READINESS_URL: the recovery region's exporter, `GET /failover-readiness`
  (`?group=G&mode=M` are added). GO only on HTTP 200 with a JSON verdict
  that says GO for that group and mode, evaluated within
  MAX_VERDICT_AGE_SECONDS (default 120).
- ALARM_NAME: the CloudWatch alarm on the exporter's published
  `FailoverReady` (deploy/aws/failover-gate.template.json). GO only in state
  OK. ALARM is NO-GO; INSUFFICIENT_DATA (nothing published: the exporter
  is down or cannot reach CloudWatch) is unknown.

Unknown is never GO: a timeout, a connection error, any other status, a body
that is not the verdict, a stale verdict, a missing alarm all refuse. With
both set, both must say GO. GROUP names the group (required); MODE is
`unplanned` (default: the source region is gone, this gate runs for a
failover) or `planned`; an invocation event may override both
(`{"group": "erp", "mode": "planned"}`).

Lambda: handler `promotion_gate.handler`. On GO it returns
`{"promote": true, "reasons": [...]}`; otherwise it raises PromotionRefused
(the invocation fails, so a Step Functions state or the caller stops) whose
message lists every reason. Command line (for a person, or CI):
`python3 promotion_gate.py --url URL --group G [--mode M] [--alarm NAME]`
prints the decision as JSON and exits 0 (promote) or 1 (refused).

It uses only the standard library, and boto3 (in the Lambda runtime) only
when ALARM_NAME is set. It reads no secret and logs none.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_MAX_VERDICT_AGE_SECONDS = 120.0
DEFAULT_TIMEOUT_SECONDS = 5.0
MODES = ("planned", "unplanned")


class PromotionRefused(Exception):
    """The gate said no: the message lists why."""


def readiness_decision(status, body, group, mode, now, max_age_seconds):
    """(go, reason) from one `/failover-readiness` answer.

    `status` is the HTTP status (None when no answer came), `body` the text
    (or, with no answer, what went wrong)."""
    where = "the exporter's /failover-readiness"
    if status is None:
        return False, f"{where} did not answer ({body}): unknown is never GO"
    try:
        verdict = json.loads(body)
    except (TypeError, ValueError):
        return False, f"{where} answered HTTP {status} without a JSON verdict: unknown is never GO"
    if not isinstance(verdict, dict):
        return False, f"{where} answered HTTP {status} without a JSON verdict: unknown is never GO"
    exporter = verdict.get("exporter") or {}
    who = f"exporter {exporter.get('instance', '?')} in {exporter.get('region') or 'no region'}"
    if status == 503 or verdict.get("verdict") == "NO-GO":
        reasons = verdict.get("reasons") or ["no reason given"]
        return False, f"{who} says NO-GO for {group} ({mode}): " + "; ".join(map(str, reasons))
    if status != 200:
        return False, f"{where} answered HTTP {status}: unknown is never GO"
    if verdict.get("verdict") != "GO" or verdict.get("ready") is not True:
        return False, f"{who} did not say GO: unknown is never GO"
    if verdict.get("mode") != mode:
        return False, f"{who} answered for mode {verdict.get('mode')!r}, not {mode!r}"
    groups = [g for g in verdict.get("groups") or [] if isinstance(g, dict) and g.get("group") == group]
    if len(groups) != 1 or groups[0].get("verdict") != "GO" or groups[0].get("ready") is not True:
        return False, f"{who} gave no GO for group {group!r}"
    evaluated = verdict.get("evaluated_at_unix")
    if not isinstance(evaluated, (int, float)) or isinstance(evaluated, bool):
        return False, f"{who} did not say when it evaluated: unknown is never GO"
    age = now - float(evaluated)
    if age > max_age_seconds or age < -max_age_seconds:
        return False, f"{who}'s verdict is {age:.0f}s old (more than {max_age_seconds:.0f}s): stale is unknown, never GO"
    return True, f"{who} says GO for {group} ({mode}), evaluated {max(age, 0):.0f}s ago"


def alarm_decision(alarm_name, state):
    """(go, reason) from the alarm's StateValue (None: no such alarm)."""
    if state is None:
        return False, f"alarm {alarm_name} does not exist: unknown is never GO"
    if state == "OK":
        return True, f"alarm {alarm_name} is OK: the exporter publishes GO"
    if state == "ALARM":
        return False, f"alarm {alarm_name} is in ALARM: the exporter publishes NO-GO or nothing"
    return False, f"alarm {alarm_name} is {state}: nothing published, unknown is never GO"


def decide(checks):
    """Promote only when at least one check ran and every check says GO."""
    if not checks:
        return {"promote": False, "reasons": ["no check configured: set READINESS_URL and/or ALARM_NAME"]}
    return {"promote": all(go for go, _ in checks), "reasons": [reason for _, reason in checks]}


def fetch_readiness(url, group, mode, timeout_seconds):
    """(status, body) of GET url?group=G&mode=M; (None, what went wrong)
    when no HTTP answer came. The URL is never part of the message."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None, "READINESS_URL is not an http:// or https:// URL"
    query = urllib.parse.parse_qsl(parts.query)
    query = [(k, v) for k, v in query if k not in ("group", "mode")] + [("group", group), ("mode", mode)]
    full = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    request = urllib.request.Request(full, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            return response.status, response.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read(1 << 20).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return None, type(reason).__name__ if not isinstance(reason, str) else reason


def read_alarm_state(alarm_name):
    """The alarm's StateValue, or None when there is no such alarm."""
    import boto3  # the Lambda runtime has it; only needed for ALARM_NAME

    alarms = boto3.client("cloudwatch").describe_alarms(AlarmNames=[alarm_name], AlarmTypes=["MetricAlarm"])
    found = alarms.get("MetricAlarms") or []
    return found[0].get("StateValue") if found else None


def evaluate(url, alarm_name, group, mode, max_age_seconds, timeout_seconds, now=None):
    """Runs the configured checks; the decision."""
    if not group:
        return {"promote": False, "reasons": ["GROUP is not set: name the group to fail over"]}
    if mode not in MODES:
        return {"promote": False, "reasons": [f"MODE must be planned or unplanned, not {mode!r}"]}
    checks = []
    if url:
        status, body = fetch_readiness(url, group, mode, timeout_seconds)
        checks.append(readiness_decision(status, body, group, mode, time.time() if now is None else now, max_age_seconds))
    if alarm_name:
        try:
            state = read_alarm_state(alarm_name)
        except Exception as err:  # any failure to read the alarm is unknown
            checks.append((False, f"alarm {alarm_name} could not be read ({type(err).__name__}): unknown is never GO"))
        else:
            checks.append(alarm_decision(alarm_name, state))
    return decide(checks)


def _float_env(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def handler(event, context):
    """The Lambda entry point."""
    event = event if isinstance(event, dict) else {}
    decision = evaluate(
        url=os.environ.get("READINESS_URL", ""),
        alarm_name=os.environ.get("ALARM_NAME", ""),
        group=event.get("group") or os.environ.get("GROUP", ""),
        mode=event.get("mode") or os.environ.get("MODE", "unplanned"),
        max_age_seconds=_float_env("MAX_VERDICT_AGE_SECONDS", DEFAULT_MAX_VERDICT_AGE_SECONDS),
        timeout_seconds=_float_env("TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS),
    )
    print(json.dumps(decision))
    if not decision["promote"]:
        raise PromotionRefused("promotion refused: " + "; ".join(decision["reasons"]))
    return decision


def main(argv=None):
    parser = argparse.ArgumentParser(description="Refuse to promote unless rpo-exporter says GO.")
    parser.add_argument("--url", default="", help="the recovery region's exporter's /failover-readiness URL")
    parser.add_argument("--alarm", default="", help="the CloudWatch alarm on FailoverReady")
    parser.add_argument("--group", required=True)
    parser.add_argument("--mode", default="unplanned", choices=MODES)
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_VERDICT_AGE_SECONDS)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS)
    args = parser.parse_args(argv)
    decision = evaluate(args.url, args.alarm, args.group, args.mode, args.max_age, args.timeout)
    print(json.dumps(decision, indent=2))
    return 0 if decision["promote"] else 1


if __name__ == "__main__":
    sys.exit(main())
