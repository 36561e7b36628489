"""The promotion gate's decisions: GO only on a fresh GO, never on unknown.

Run: python3 -m unittest discover -s deploy/aws/promotion-gate
(the Rust test suite runs it, and runs the gate against a real exporter).
"""

import http.server
import json
import os
import threading
import time
import unittest
from unittest import mock

import promotion_gate as gate

NOW = 1_800_000_000.0


def verdict(go=True, group="erp", mode="unplanned", age=3.0, **extra):
    body = {
        "schema_version": 1,
        "verdict": "GO" if go else "NO-GO",
        "ready": go,
        "mode": mode,
        "evaluated_at_unix": NOW - age,
        "exporter": {"instance": "dr-1", "region": "eu-west-1"},
        "reasons": [] if go else ["erp-db: exposure 42s exceeds budget 5s"],
        "groups": [{"group": group, "verdict": "GO" if go else "NO-GO", "ready": go}],
    }
    body.update(extra)
    return json.dumps(body)


def readiness(status, body, group="erp", mode="unplanned"):
    return gate.readiness_decision(status, body, group, mode, NOW, 120.0)


class ReadinessDecision(unittest.TestCase):
    def test_a_fresh_go_for_the_group_and_mode_promotes(self):
        go, reason = readiness(200, verdict())
        self.assertTrue(go, reason)
        self.assertIn("exporter dr-1 in eu-west-1 says GO for erp (unplanned)", reason)

    def test_no_go_refuses_with_the_exporters_reasons(self):
        go, reason = readiness(503, verdict(go=False))
        self.assertFalse(go)
        self.assertIn("NO-GO", reason)
        self.assertIn("erp-db: exposure 42s exceeds budget 5s", reason)
        # A body that says GO with a 503 is still no.
        self.assertFalse(readiness(503, verdict())[0])
        # A 200 whose body says NO-GO is no.
        self.assertFalse(readiness(200, verdict(go=False))[0])

    def test_unknown_is_never_go(self):
        cases = {
            "no answer": (None, "timeout"),
            "not JSON": (200, "<html>proxy error</html>"),
            "JSON but not an object": (200, "[1, 2]"),
            "another status": (404, verdict()),
            "an error body": (400, json.dumps({"error": "unknown group"})),
            "ready missing": (200, verdict(ready=None)),
            "another mode": (200, verdict(mode="planned")),
            "another group": (200, verdict(group="billing")),
            "no groups": (200, verdict(groups=[])),
            "stale": (200, verdict(age=600)),
            "from the future": (200, verdict(age=-600)),
            "no time": (200, verdict(evaluated_at_unix=None)),
            "time as a boolean": (200, verdict(evaluated_at_unix=True)),
        }
        for name, (status, body) in cases.items():
            with self.subTest(name):
                go, reason = readiness(status, body)
                self.assertFalse(go, f"{name}: {reason}")
                self.assertTrue(reason)

    def test_a_group_entry_that_is_no_go_refuses(self):
        body = json.loads(verdict())
        body["groups"][0]["verdict"] = "NO-GO"
        self.assertFalse(readiness(200, json.dumps(body))[0])


class AlarmDecision(unittest.TestCase):
    def test_only_ok_promotes(self):
        self.assertTrue(gate.alarm_decision("rpo-erp", "OK")[0])
        for state in ("ALARM", "INSUFFICIENT_DATA", None, "SOMETHING_NEW"):
            with self.subTest(state):
                go, reason = gate.alarm_decision("rpo-erp", state)
                self.assertFalse(go)
                self.assertIn("rpo-erp", reason)


class Decide(unittest.TestCase):
    def test_every_check_must_say_go(self):
        self.assertTrue(gate.decide([(True, "a"), (True, "b")])["promote"])
        self.assertFalse(gate.decide([(True, "a"), (False, "b")])["promote"])
        self.assertEqual(gate.decide([(True, "a"), (False, "b")])["reasons"], ["a", "b"])

    def test_no_check_is_no_promotion(self):
        decision = gate.decide([])
        self.assertFalse(decision["promote"])
        self.assertIn("READINESS_URL", decision["reasons"][0])

    def test_settings_are_checked(self):
        self.assertFalse(gate.evaluate("http://x", "", "", "unplanned", 120, 1)["promote"])
        self.assertFalse(gate.evaluate("http://x", "", "erp", "sideways", 120, 1)["promote"])

    def test_an_unreadable_alarm_is_unknown(self):
        with mock.patch.object(gate, "read_alarm_state", side_effect=RuntimeError("no credentials")):
            decision = gate.evaluate("", "rpo-erp", "erp", "unplanned", 120, 1)
        self.assertFalse(decision["promote"])
        self.assertIn("could not be read (RuntimeError)", decision["reasons"][0])
        self.assertNotIn("no credentials", decision["reasons"][0])


class Handler(unittest.TestCase):
    """The Lambda entry point against a local HTTP server."""

    def serve(self, status, body):
        seen = []

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.path)
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return f"http://127.0.0.1:{server.server_port}/failover-readiness", seen

    def test_go_returns_and_no_go_raises(self):
        live = json.loads(verdict())
        live["evaluated_at_unix"] = time.time()
        url, seen = self.serve(200, json.dumps(live))
        with mock.patch.dict(os.environ, {"READINESS_URL": url, "GROUP": "erp"}, clear=False):
            self.assertTrue(gate.handler({}, None)["promote"])
        self.assertEqual(seen, ["/failover-readiness?group=erp&mode=unplanned"])

        url, _ = self.serve(503, verdict(go=False))
        with mock.patch.dict(os.environ, {"READINESS_URL": url, "GROUP": "erp"}, clear=False):
            with self.assertRaises(gate.PromotionRefused) as refused:
                gate.handler({"mode": "unplanned"}, None)
        self.assertIn("exceeds budget", str(refused.exception))

    def test_an_exporter_that_does_not_answer_refuses(self):
        # Port 9 (discard) has no listener here: the connection is refused.
        closed = "http://127.0.0.1:9/failover-readiness"
        with mock.patch.dict(os.environ, {"READINESS_URL": closed, "GROUP": "erp"}, clear=False):
            with self.assertRaises(gate.PromotionRefused) as refused:
                gate.handler({}, None)
        self.assertIn("did not answer", str(refused.exception))
        self.assertNotIn("127.0.0.1", str(refused.exception))


if __name__ == "__main__":
    unittest.main()
