"""The companion SDK's Python bindings against the real server: every flow a phone goes through.

Run by companion/tests/python/run (from scripts/test). Standard library only. Needs
ASSENT_BIN (the server binary) and the generated bindings (assent_companion.py beside
libassent_companion.so) on sys.path.
"""

import http.cookiejar
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import assent_companion as sdk

BIN = os.environ["ASSENT_BIN"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`assent serve` on a free loopback port with a fresh SQLite database; no push configured,
    so every challenge reaches the phone only by polling (a push that is always lost)."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="assent-sdk-py-")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("ASSENT_") or k == "ASSENT_BIN"
        }
        self.env.update({
            "ASSENT_LISTEN": f"127.0.0.1:{port}",
            "ASSENT_PUBLIC_URL": self.base,
            "ASSENT_DATABASE_URL": f"sqlite://{self.dir.name}/assent.db",
            "ASSENT_LOG": "warn",
        })
        self.log = open(os.path.join(self.dir.name, "server.log"), "wb")
        self.process = subprocess.Popen([BIN, "serve"], env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("assent serve did not start: " + self.log_text())
            time.sleep(0.1)

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.dir.name, "server.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def cli(self, *args):
        out = subprocess.run([BIN, *args], env=self.env, capture_output=True, check=True)
        return json.loads(out.stdout)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        self.dir.cleanup()


class Browser:
    """What the console page (or the support page) does over HTTP, with its cookie."""

    def __init__(self, server):
        self.server = server
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def call(self, method, path, body=None, expect=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server.base + path, data=data, method=method)
        request.add_header("Origin", self.server.base)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(request, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        if expect is not None and status != expect:
            raise AssertionError(f"{method} {path}: {status} {text[:300]!r}, expected {expect}")
        return json.loads(text) if text else None

    def challenge_status(self, prefix, challenge_id):
        return self.call("GET", f"/v1/{prefix}/challenges/{challenge_id}", expect=200)["status"]


def software_phone(offer, name):
    return sdk.CompanionClient.enroll(
        offer, sdk.EnrollRequest(name=name, platform=sdk.PushPlatform.FCM(), push_token=None),
        sdk.software_signer())


class BrokenSigner(sdk.DeviceKeySigner):
    """A phone key that answers with the wrong thing: another key's public key, or garbage."""

    def __init__(self, public_key, signature=None, fail=False):
        self._public_key = public_key
        self._signature = signature
        self._fail = fail

    def public_key(self):
        return self._public_key

    def sign(self, message):
        if self._fail:
            raise sdk.SignerError.Failed("the user cancelled biometrics")
        return self._signature


class ApprovalFlow(unittest.TestCase):
    """One server and one workspace; the tests run in name order, as a phone's life does."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.slug = "acme"
        created = cls.server.cli("workspace", "create", "--slug", cls.slug, "--name", "Acme Corp",
                                 "--owner-email", "owner@acme.example")
        cls.owner = Browser(cls.server)
        cls.owner.call("POST", "/v1/console/session", {
            "workspace": cls.slug, "email": "owner@acme.example", "password": created["password"]},
            expect=200)
        cls.phone = None

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def reveal(self):
        return self.owner.call("POST", "/v1/console/scim-token/reveal", expect=202)

    def test_01_enroll_from_the_consoles_qr_code(self):
        offer = self.owner.call("POST", "/v1/console/devices/enrollments", expect=201)
        parsed = sdk.parse_enrollment_uri(offer["uri"])
        self.assertEqual(parsed.server, self.server.base)
        self.assertEqual(parsed.code, offer["code"])
        phone = software_phone(parsed, "Pixel 8")
        state = phone.state()
        self.assertEqual(state.audience, self.server.base)
        devices = self.owner.call("GET", "/v1/console/devices", expect=200)["devices"]
        self.assertEqual([d["id"] for d in devices], [state.device_id])
        # The code is spent: enrolling with it again is Expired (410); an unknown code is refused (404).
        with self.assertRaises(sdk.CompanionError.Expired):
            software_phone(parsed, "again")
        with self.assertRaises(sdk.CompanionError.Refused) as refused:
            software_phone(sdk.enrollment_offer(self.server.base, "NOT-A-CODE"), "unknown")
        self.assertEqual(refused.exception.status, 404)
        # A restored phone (saved state, same key) works like the first.
        type(self).phone = phone
        self.assertEqual(phone.pending(), [])

    def test_02_a_lost_push_is_recovered_by_polling_then_view_token_is_approved(self):
        asked = {}
        # No push reaches this phone: it finds the challenge by polling the pending list.
        timer = threading.Timer(1.0, lambda: asked.update(self.reveal()))
        timer.start()
        challenge = self.phone.wait_for_challenge(None, 30_000, 250)
        timer.join()
        self.assertIsNotNone(challenge)
        self.assertEqual(challenge.id, asked["challenge_id"])
        self.assertEqual(asked["notified_devices"], 0)
        self.assertEqual(challenge.action, "scim_token.reveal")
        self.assertEqual(challenge.description, "View the SCIM token")
        self.assertEqual(challenge.workspace_name, "Acme Corp")
        self.assertEqual(challenge.requested_by, "owner@acme.example")
        self.assertEqual(challenge.ip, "127.0.0.1")
        self.assertIn(asked["number"], challenge.number_choices)
        self.assertEqual(len(challenge.number_choices), 3)
        # Looked up by the id a push would carry.
        self.assertEqual(self.phone.challenge(challenge.id), challenge)

        status = self.phone.approve(challenge, asked["number"])
        self.assertEqual(status, sdk.DecisionStatus.APPROVED)
        released = self.owner.call("POST", f"/v1/console/challenges/{challenge.id}/release", expect=200)
        self.assertTrue(released["token"].startswith("assent_scim_"))
        # Decided once only.
        with self.assertRaises(sdk.CompanionError.AlreadyDecided):
            self.phone.approve(challenge, asked["number"])
        self.assertIsNone(self.phone.challenge(challenge.id))

    def test_03_a_wrong_number_denies_whether_or_not_it_was_offered(self):
        for pick in ("offered", "off the list"):
            asked = self.reveal()
            challenge = self.phone.challenge(asked["challenge_id"])
            if pick == "offered":
                wrong = next(n for n in challenge.number_choices if n != asked["number"])
            else:
                wrong = next(n for n in range(10, 100) if n not in challenge.number_choices)
            with self.assertRaises(sdk.CompanionError.WrongNumber, msg=pick):
                self.phone.approve(challenge, wrong)
            self.assertEqual(self.owner.challenge_status("console", challenge.id), "denied", pick)

    def test_04_an_expired_challenge_is_not_signed(self):
        asked = self.reveal()
        challenge = self.phone.challenge(asked["challenge_id"])
        challenge.expires_at = "2020-01-01T00:00:00Z"
        with self.assertRaises(sdk.CompanionError.Expired):
            self.phone.approve(challenge, asked["number"])
        self.assertEqual(self.owner.challenge_status("console", challenge.id), "pending")
        fresh = self.phone.challenge(asked["challenge_id"])
        self.assertEqual(self.phone.deny(fresh, sdk.DenyReason.MISTAKE), sdk.DecisionStatus.DENIED)

    def test_05_a_broken_signer_fails_before_anything_is_sent(self):
        state = self.phone.state()
        other = sdk.software_signer()
        wrong_key = sdk.CompanionClient.restore(state, BrokenSigner(other.public_key(), other.sign(b"x")))
        with self.assertRaises(sdk.CompanionError.SignerFailed):
            wrong_key.pending()
        for signature in [b"", b"\x00" * 64, b"\x30" * 70]:
            garbage = sdk.CompanionClient.restore(state, BrokenSigner(other.public_key(), signature))
            with self.assertRaises(sdk.CompanionError.SignerFailed):
                garbage.pending()
        cancelled = sdk.CompanionClient.restore(state, BrokenSigner(other.public_key(), fail=True))
        with self.assertRaises(sdk.CompanionError.SignerFailed):
            cancelled.pending()
        with self.assertRaises(sdk.CompanionError.SignerFailed):
            sdk.CompanionClient.restore(state, BrokenSigner(b"\x04" + b"\x01" * 64))

    def test_06_device_enroll_is_approved_on_the_first_phone(self):
        asked = self.owner.call("POST", "/v1/console/devices/enrollments", expect=202)
        challenge = self.phone.challenge(asked["challenge_id"])
        self.assertEqual(challenge.action, "device.enroll")
        self.assertEqual(challenge.description, "Add a new phone to your account")
        self.assertEqual(self.phone.approve(challenge, asked["number"]), sdk.DecisionStatus.APPROVED)
        offer = self.owner.call("POST", f"/v1/console/challenges/{challenge.id}/release", expect=200)
        self.assertEqual(offer["action"], "device.enroll")
        second = sdk.CompanionClient.enroll(
            sdk.parse_enrollment_uri(offer["uri"]),
            sdk.EnrollRequest(name="iPhone", platform=sdk.PushPlatform.APNS(sandbox=True),
                              push_token="ab" * 32),
            sdk.software_signer())
        devices = self.owner.call("GET", "/v1/console/devices", expect=200)["devices"]
        self.assertEqual(len(devices), 2)
        second.update_push_token("cd" * 32)
        with self.assertRaises(sdk.CompanionError.InvalidInput):
            second.update_push_token("")
        # Unenrolled, the phone's calls are refused.
        second.unenroll()
        devices = self.owner.call("GET", "/v1/console/devices", expect=200)["devices"]
        self.assertEqual([d["id"] for d in devices], [self.phone.state().device_id])
        with self.assertRaises(sdk.CompanionError.Refused) as refused:
            second.pending()
        self.assertEqual(refused.exception.status, 401)

    def test_07_a_support_rotation_signs_its_workspace_and_ticket(self):
        staff = self.server.cli("staff", "add", "--email", "ops@support.example")
        support = Browser(self.server)
        support.call("POST", "/v1/support/session",
                     {"email": "ops@support.example", "password": staff["password"]}, expect=200)
        offer = support.call("POST", "/v1/support/devices/enrollments", expect=201)
        staff_phone = software_phone(sdk.parse_enrollment_uri(offer["uri"]), "Support phone")
        asked = support.call("POST", f"/v1/support/workspaces/{self.slug}/scim-token/rotate",
                             {"ticket": "T-4711", "reason": "customer lost the token"}, expect=202)
        challenge = staff_phone.challenge(asked["challenge_id"])
        self.assertEqual(challenge.action, "scim_token.support_rotate")
        self.assertEqual((challenge.workspace_slug, challenge.ticket), (self.slug, "T-4711"))
        self.assertEqual(challenge.reason, "customer lost the token")
        self.assertEqual(staff_phone.approve(challenge, asked["number"]), sdk.DecisionStatus.APPROVED)
        released = support.call("POST", f"/v1/support/challenges/{challenge.id}/release", expect=200)
        self.assertEqual(released["action"], "scim_token.support_rotate")
        self.assertNotIn("token", released)

    def test_08_deny_not_me_is_recorded_as_a_suspected_attack(self):
        asked = self.reveal()
        challenge = self.phone.challenge(asked["challenge_id"])
        self.assertEqual(self.phone.deny(challenge, sdk.DenyReason.NOT_ME), sdk.DecisionStatus.DENIED)
        self.assertEqual(self.owner.challenge_status("console", challenge.id), "denied")
        alerts = self.owner.call("GET", "/v1/console/audit?kind=security.suspected_attack", expect=200)
        self.assertEqual(len(alerts["entries"]), 1, alerts)


class Payloads(unittest.TestCase):
    """The push parsers as an app calls them, and their typed refusals."""

    def test_push_payloads(self):
        event = sdk.parse_fcm_data({"kind": "challenge", "challenge_id": "c1", "action": "device.enroll",
                                    "workspace": "Acme", "expires_at": "2026-11-28T12:02:00Z"})
        self.assertEqual(event, sdk.PushEvent.CHALLENGE(
            challenge_id="c1", action="device.enroll", description="Add a new phone to your account",
            workspace="Acme", expires_at="2026-11-28T12:02:00Z"))
        resolved = sdk.parse_apns_payload(json.dumps(
            {"aps": {"content-available": 1}, "kind": "resolved", "challenge_id": "c1",
             "action": "scim_token.reveal", "workspace": "Acme", "expires_at": "2026-11-28T12:02:00Z"}))
        self.assertEqual(resolved, sdk.PushEvent.RESOLVED(challenge_id="c1"))
        for bad in ["", "[]", "{\"kind\": \"challenge\"}", "{\"kind\": 3}"]:
            with self.assertRaises(sdk.CompanionError.InvalidPayload):
                sdk.parse_apns_payload(bad)
        for bad in ["https://example.com", "assent://enroll?code=x"]:
            with self.assertRaises(sdk.CompanionError.InvalidPayload):
                sdk.parse_enrollment_uri(bad)


if __name__ == "__main__":
    unittest.main(verbosity=2)
