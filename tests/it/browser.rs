//! The console page end to end, in headless Chromium driven through ChromeDriver (`fantoccini`), against
//! the real `assent serve` (tests/support starts it, with a temporary SQLite database) and the companion
//! simulator (`assent companion`) as the phone.
//!
//! One server and one ChromeDriver serve the whole file; each test has a Chromium of its own with an
//! empty profile, and its own workspace. The tests run one at a time (the machine has 2 cores, and a
//! browser each would only make the waits flaky). Screenshots of every dialog go to
//! `target/e2e-screenshots/`; with `ASSENT_UPDATE_DOCS=1` the View Token dialog is also written to
//! `docs/view-token.png`, the picture the README shows.

mod admin;

// The real server and the CLI, as the other suites use them.
use crate::support;
use crate::support::page as support_browser;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::{json, Value};
use support::{scim_status, server, ServerOptions, TestServer, Workspace};
use support_browser::{chrome::WAIT, Page};
use tokio::sync::{Mutex, MutexGuard, OnceCell};

/// One browser test at a time (a tokio mutex: it is not tied to a test's runtime and is never poisoned).
static SERIAL: Mutex<()> = Mutex::const_new(());

async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// The challenge TTL of the server that the expiry test uses.
const SHORT_TTL_SECS: u64 = 3;

/// A second server whose challenges expire after [`SHORT_TTL_SECS`].
async fn short_ttl_server() -> &'static TestServer {
    static SERVER: OnceCell<TestServer> = OnceCell::const_new();
    SERVER
        .get_or_init(|| {
            TestServer::start(ServerOptions {
                challenge_ttl_secs: SHORT_TTL_SECS,
                ..ServerOptions::default()
            })
        })
        .await
}

// -------------------------------------------------------------------------------------------------
// Helpers

/// The companion simulator with its own state file: the phone of one console user.
struct Phone {
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Phone {
    fn new() -> Phone {
        let dir = tempfile::Builder::new()
            .prefix("assent-companion-")
            .tempdir()
            .expect("tempdir");
        Phone {
            state: dir.path().join("companion.json"),
            _dir: dir,
        }
    }

    /// `assent companion --state FILE <args>`; asserts it succeeds and returns its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(server::BIN)
            .arg("companion")
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .env_remove("ASSENT_CONFIG")
            .output()
            .expect("run assent companion");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "assent companion {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        stdout
    }
}

/// Signs in through the form and waits for the console.
async fn sign_in(page: &Page, workspace: &str, email: &str, password: &str) {
    page.wait_visible("login-workspace").await;
    page.fill("login-workspace", workspace).await;
    page.fill("login-email", email).await;
    page.fill("login-password", password).await;
    page.click("login-submit").await;
    page.wait_visible("view-token").await;
    let account = page.wait_text("account-user", email, WAIT).await;
    assert!(account.contains(email), "{account}");
}

/// "Add a device" for a first phone: the enrollment dialog shows a code and a QR image; the simulator
/// enrolls with the code; closing the dialog lists the device. Returns the enrollment code.
async fn enroll_through_page(
    page: &Page,
    phone: &Phone,
    device_name: &str,
    shot: Option<&str>,
) -> String {
    page.click("add-device").await;
    enroll_from_dialog(page, phone, device_name, shot).await
}

/// The enrollment dialog, however it opened: its code and QR image, the simulator enrolls with the
/// code, closing the dialog lists the device and gives the focus back to "Add a device".
async fn enroll_from_dialog(
    page: &Page,
    phone: &Phone,
    device_name: &str,
    shot: Option<&str>,
) -> String {
    page.wait_dialog("enroll-dialog").await;
    let code = page
        .wait_js(
            "the enrollment code",
            WAIT,
            "return document.getElementById('enrollment-code').textContent.trim();",
            vec![],
        )
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        code.len() >= 8 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "enrollment code {code:?}"
    );
    // The QR code: an <img> whose SVG (drawn by the server) has loaded and has a size.
    let qr = page
        .wait_js(
            "the QR image to load",
            WAIT,
            "const img = document.querySelector('#enrollment-qr img');
             return img && img.complete && img.naturalWidth > 0
               ? { src: img.src.slice(0, 26), w: img.naturalWidth, h: img.naturalHeight, shown: img.getClientRects().length > 0 }
               : null;",
            vec![],
        )
        .await;
    assert_eq!(qr["src"], "data:image/svg+xml;base64,", "{qr}");
    assert_eq!(qr["w"], qr["h"], "a QR code is square: {qr}");
    assert_eq!(qr["shown"], true, "{qr}");
    let command = page.value("enrollment-command").await;
    assert!(
        command.contains(&format!("--code {code}")) && command.contains(&page.base),
        "the simulator command {command:?}"
    );
    if let Some(name) = shot {
        page.screenshot(name).await;
    }

    phone.run(&[
        "enroll",
        "--server",
        &page.base,
        "--code",
        &code,
        "--name",
        device_name,
    ]);

    page.click("enroll-close").await;
    page.wait_text("device-list", device_name, WAIT).await;
    assert_eq!(
        focused(page).await,
        "add-device",
        "the focus did not return to the button that opened the dialog"
    );
    code
}

/// The id of the element that has the keyboard focus.
async fn focused(page: &Page) -> String {
    page.js(
        "return document.activeElement ? document.activeElement.id : '';",
        vec![],
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Nothing sticks out sideways: the page does not scroll horizontally, and every open dialog is
/// inside the viewport (what a 320 px wide screen needs).
async fn assert_fits_the_width(page: &Page) {
    let fit = page
        .js(
            "const w = window.innerWidth;
             const outside = [...document.querySelectorAll('dialog[open], dialog[open] *')]
               .filter((e) => e.getClientRects().length > 0)
               .map((e) => [e.id || e.tagName, e.getBoundingClientRect()])
               .filter(([, r]) => r.left < -0.5 || r.right > w + 0.5)
               .map(([name, r]) => `${name}: ${Math.round(r.left)}..${Math.round(r.right)}`);
             const scroll = document.documentElement.scrollWidth <= w;
             // What makes the page scroll, named (a table scrolls inside its own .table-wrap).
             const wide = scroll ? [] : [...document.querySelectorAll('body *')]
               .filter((e) => e.getClientRects().length > 0 && !e.closest('.table-wrap'))
               .filter((e) => e.getBoundingClientRect().right > w + 0.5)
               .map((e) => `${e.id || e.tagName}: ..${Math.round(e.getBoundingClientRect().right)}`);
             return { scroll, outside, wide };",
            vec![],
        )
        .await;
    assert_eq!(
        fit,
        json!({"scroll": true, "outside": [], "wide": []}),
        "wider than the viewport"
    );
}

/// Waits for the challenge dialog (after View Token, or the confirmed Regenerate) and its
/// two-digit number; returns the number.
async fn wait_challenge_number(page: &Page) -> u8 {
    page.wait_dialog("challenge-dialog").await;
    let text = page
        .wait_js(
            "the two-digit number",
            WAIT,
            "const t = document.getElementById('challenge-number').textContent.trim();
             return /^[0-9]{2}$/.test(t) ? t : null;",
            vec![],
        )
        .await;
    let n: u8 = text.as_str().unwrap().parse().unwrap();
    assert!((10..=99).contains(&n), "number {n}");
    n
}

/// Waits for the Show Token dialog and returns the token it holds.
async fn wait_token(page: &Page) -> String {
    page.wait_dialog("token-dialog").await;
    let token = page
        .wait_js(
            "the token in the Show Token dialog",
            WAIT,
            "const v = document.getElementById('token-value').value;
             return v.startsWith('assent_scim_') ? v : null;",
            vec![],
        )
        .await
        .as_str()
        .unwrap()
        .to_string();
    support::assert_token_shape(&token);
    assert!(
        !page.dialog_open("challenge-dialog").await,
        "the challenge dialog closes when the token shows"
    );
    token
}

/// View Token → approve on the phone with the page's number → the token.
async fn view_token(page: &Page, phone: &Phone) -> String {
    page.click("view-token").await;
    let n = wait_challenge_number(page).await;
    phone.run(&["approve", "--number", &n.to_string()]);
    wait_token(page).await
}

async fn close_token_dialog(page: &Page) {
    page.click("token-close").await;
    // The dialog's `close` event, which clears the field, is dispatched as a task of its own after
    // `open` turns false: wait for both (a field never cleared fails here, after WAIT).
    page.wait_js(
        "the Show Token dialog to close and the token to leave the page",
        WAIT,
        "return !document.getElementById('token-dialog').open
           && document.getElementById('token-value').value === '';",
        vec![],
    )
    .await;
}

/// The page's own origin holds no trace of the token: not in the URL, storage or readable cookies.
async fn assert_token_not_kept(page: &Page, token: &str) {
    let found = page
        .js(
            "const token = arguments[0];
             const stores = [localStorage, sessionStorage].flatMap((s) =>
               Object.keys(s).map((k) => k + '=' + s.getItem(k)));
             return {
               url: location.href.includes(token),
               storage: stores.some((e) => e.includes(token)),
               cookie: document.cookie.includes(token),
               title: document.title.includes(token),
             };",
            vec![json!(token)],
        )
        .await;
    assert_eq!(
        found,
        json!({"url": false, "storage": false, "cookie": false, "title": false}),
        "the token leaked out of the dialog"
    );
}

/// No script error and no Content-Security-Policy violation in the browser's console. The browser's
/// own line for an HTTP error answer ("Failed to load resource: … status of 401") is no fault of the
/// page: a 401 before sign-in, a 403 for a member are the API's answers the page handles.
async fn assert_no_console_errors(page: &Page) {
    let errors: Vec<String> = page
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("Failed to load resource: the server responded with a status of"))
        .collect();
    assert!(
        errors.is_empty(),
        "the browser console has errors: {errors:#?}"
    );
}

fn write_docs_screenshot(from: &Path) {
    if std::env::var_os("ASSENT_UPDATE_DOCS").is_none() {
        return;
    }
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).expect("create docs/");
    std::fs::copy(from, docs.join("view-token.png")).expect("copy to docs/view-token.png");
}

async fn owner_page(server: &TestServer, name: &str) -> (Workspace, Page) {
    let ws = server.create_workspace();
    let page = Page::open(&server.base, name).await;
    sign_in(&page, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    (ws, page)
}

/// A workspace that reads well in the README's screenshot: "Acme", owner ada@acme.example.
fn acme_workspace(server: &TestServer) -> Workspace {
    let slug = server::unique("acme");
    let owner_email = "ada@acme.example".to_string();
    let out = server.cli(&[
        "workspace",
        "create",
        "--slug",
        &slug,
        "--name",
        "Acme",
        "--owner-email",
        &owner_email,
    ]);
    Workspace {
        slug,
        name: "Acme".into(),
        owner_email,
        owner_password: out["password"].as_str().expect("password").to_string(),
    }
}

// -------------------------------------------------------------------------------------------------
// Tests

/// A wrong password says so on the form; the right one opens the console; Sign out returns to the form.
#[tokio::test]
async fn sign_in_form_rejects_a_wrong_password_then_signs_in_and_out() {
    let _serial = serial().await;
    let server = server::shared().await;
    let ws = server.create_workspace();
    let page = Page::open(&server.base, "sign-in").await;

    page.wait_visible("login-workspace").await;
    assert!(
        !page.displayed("view-token").await,
        "the console shows before sign-in"
    );
    // The browser's console is read: it logged the page's first, signed-out `GET` of the session.
    // (So that `assert_no_console_errors` below is no empty check.)
    let logged = page.console_errors().await;
    assert!(
        logged
            .iter()
            .any(|e| e.contains("/v1/console/session") && e.contains("401")),
        "the browser console is not readable, or the page did not ask for its session: {logged:#?}"
    );
    page.fill("login-workspace", &ws.slug).await;
    page.fill("login-email", &ws.owner_email).await;
    page.fill("login-password", "not-the-password").await;
    page.click("login-submit").await;
    let message = page
        .wait_text("signin-message", "Sign-in failed", WAIT)
        .await;
    assert_eq!(
        message,
        "Sign-in failed: check the workspace, e-mail and password."
    );
    assert!(page.displayed("signin-message").await);
    assert_eq!(
        page.value("login-password").await,
        "",
        "the wrong password stays in the field"
    );
    assert!(!page.displayed("view-token").await);
    page.screenshot("failed").await;

    // The same form, now with the right password.
    page.fill("login-password", &ws.owner_password).await;
    page.click("login-submit").await;
    page.wait_visible("view-token").await;
    page.wait_text("account-user", &format!("{} · owner", ws.owner_email), WAIT)
        .await;
    let tenant = page.value("tenant-url").await;
    assert_eq!(tenant, format!("{}/v1/scim/v2", server.public_url));
    assert_eq!(
        page.value("login-password").await,
        "",
        "the password stays in the form"
    );
    assert!(
        page.displayed("regenerate-token").await,
        "an owner may regenerate"
    );
    // No device yet: the list is empty and says so.
    page.wait_visible("devices-empty").await;

    page.click("sign-out").await;
    page.wait_text("signin-message", "You are signed out.", WAIT)
        .await;
    assert!(!page.displayed("view-token").await);
    // The session is gone: a reload shows the form again.
    page.goto("/").await;
    page.wait_visible("login-workspace").await;
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// The whole View Token flow: enroll the simulator through "Add a device", View Token, approve with
/// the page's number, the Show Token dialog's token authenticates SCIM, Copy puts it on the clipboard.
#[tokio::test]
async fn view_token_approved_on_the_phone_shows_a_working_token_that_copies() {
    let _serial = serial().await;
    let server = server::shared().await;
    let ws = acme_workspace(server);
    let page = Page::open(&server.base, "view-token").await;
    sign_in(&page, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    page.wait_text("account-workspace", "Acme", WAIT).await;
    page.wait_visible("devices-empty").await;
    let phone = Phone::new();

    let code = enroll_through_page(
        &page,
        &phone,
        "Pixel of the test",
        Some("enrollment-dialog"),
    )
    .await;
    // The device list: the enrolled simulator, with its platform and dates.
    let list = page.text("device-list").await;
    assert!(list.contains("Pixel of the test"), "{list}");
    assert!(list.contains("Enrolled"), "{list}");
    assert!(
        !page.displayed("devices-empty").await,
        "still says there is no device"
    );
    assert_eq!(
        page.js(
            "return document.querySelectorAll('#device-list > li').length;",
            vec![]
        )
        .await,
        json!(1)
    );
    // A spent code does not enroll a second time.
    let again = Command::new(server::BIN)
        .args(["companion", "--state"])
        .arg(phone.state.with_extension("second"))
        .args(["enroll", "--server", &server.base, "--code", &code])
        .output()
        .unwrap();
    assert!(!again.status.success(), "an enrollment code worked twice");

    // View Token: the challenge dialog with the number.
    page.click("view-token").await;
    let n = wait_challenge_number(&page).await;
    let status = page
        .wait_text("challenge-status", "Waiting for your approval", WAIT)
        .await;
    assert!(status.contains("phone"), "{status}");
    let countdown = page
        .wait_text("challenge-countdown", "Expires in", WAIT)
        .await;
    assert!(
        countdown.starts_with("Expires in 1:") || countdown.starts_with("Expires in 2:"),
        "{countdown}"
    );
    let devices = page.text("challenge-devices").await;
    assert!(
        !devices.is_empty(),
        "the dialog does not say which devices were notified"
    );
    // What the phone sees: the page's number among its three choices.
    let pending: Value =
        serde_json::from_str(&phone.run(&["pending", "--json"])).expect("pending --json");
    let choices = &pending["challenges"][0]["number_choices"];
    assert!(
        choices
            .as_array()
            .is_some_and(|c| c.len() == 3 && c.contains(&json!(n))),
        "the phone's choices {choices} lack the page's number {n}"
    );
    assert_eq!(
        pending["challenges"][0]["workspace"]["slug"],
        ws.slug.as_str()
    );
    let shot = page.screenshot("challenge-dialog").await;
    write_docs_screenshot(&shot);

    // The phone approves with the number read from the page: the Show Token dialog opens.
    phone.run(&["approve", "--number", &n.to_string()]);
    let token = wait_token(&page).await;
    assert!(page.displayed("token-value").await);
    assert!(
        !page.displayed("token-rotated").await,
        "a reveal says the token was rotated"
    );
    assert_eq!(page.text("token-title").await, "Directory Sync token");
    page.screenshot("show-token-dialog").await;
    assert_token_not_kept(&page, &token).await;

    // The token authenticates a SCIM request.
    assert_eq!(scim_status(server, Some(&token)).await, 200);

    // Copy: the visible "Copied" state, and the clipboard holds the token.
    page.grant("clipboard-read").await;
    page.click("copy-token").await;
    let copied = page
        .wait_js(
            "the Copy button to say Copied",
            WAIT,
            "const b = document.getElementById('copy-token');
             const s = document.getElementById('token-copied').textContent.trim();
             return b.textContent.trim() === 'Copied' || s ? { button: b.textContent.trim(), status: s } : null;",
            vec![],
        )
        .await;
    assert_eq!(
        copied,
        json!({"button": "Copied", "status": "Copied to the clipboard."}),
        "the Copy button did not copy"
    );
    page.screenshot("show-token-copied").await;
    let clipboard = page
        .client()
        .execute_async(
            "const done = arguments[arguments.length - 1];
             navigator.clipboard.readText().then((text) => done({ text }), (e) => done({ error: String(e) }));",
            vec![],
        )
        .await
        .expect("read the clipboard");
    assert_eq!(
        clipboard,
        json!({ "text": token }),
        "the clipboard does not hold the token"
    );
    // The token stays in the dialog while it is open, also after the "Copied" state.
    assert_eq!(page.value("token-value").await, token);

    close_token_dialog(&page).await;
    // The token was released once: it is still the workspace's token.
    assert_eq!(scim_status(server, Some(&token)).await, 200);
    assert_no_console_errors(&page).await;

    // A reload keeps the session (the cookie), and the device list now says when the phone was last
    // seen (it asked for the pending challenge and approved it).
    page.goto("/").await;
    page.wait_visible("view-token").await;
    let list = page
        .wait_text("device-list", "Pixel of the test", WAIT)
        .await;
    assert!(list.contains("last seen"), "{list}");
    assert!(
        !list.contains("last seen never"),
        "the phone's calls did not count as seen: {list}"
    );
    assert!(!page.dialog_open("token-dialog").await);
    assert_eq!(page.value("token-value").await, "");
    page.close().await;
}

/// The phone says no: the dialog says the request was denied and offers to try again.
#[tokio::test]
async fn denied_on_the_phone_says_so() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (_ws, page) = owner_page(server, "deny").await;
    let phone = Phone::new();
    enroll_through_page(&page, &phone, "Denying phone", None).await;

    page.click("view-token").await;
    wait_challenge_number(&page).await;
    phone.run(&["deny", "--reason", "mistake"]);
    let status = page.wait_text("challenge-status", "denied", WAIT).await;
    assert_eq!(status, "The request was denied on your phone.");
    page.wait_visible("challenge-retry").await;
    assert_eq!(page.text("challenge-retry").await, "Try again");
    assert_eq!(
        page.text("challenge-countdown").await,
        "",
        "the countdown goes on after the end"
    );
    assert!(!page.dialog_open("token-dialog").await);
    page.screenshot("denied-dialog").await;

    // Try again starts a new challenge, which the phone approves.
    page.click("challenge-retry").await;
    page.wait_text("challenge-status", "Waiting for your approval", WAIT)
        .await;
    let n = wait_challenge_number(&page).await;
    phone.run(&["approve", "--number", &n.to_string()]);
    let token = wait_token(&page).await;
    assert_eq!(scim_status(server, Some(&token)).await, 200);
    close_token_dialog(&page).await;
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// Nobody answers: once the challenge expires (a server with a short TTL) the dialog says so.
#[tokio::test]
async fn unanswered_challenge_expires_and_says_so() {
    let _serial = serial().await;
    let server = short_ttl_server().await;
    let (_ws, page) = owner_page(server, "expire").await;
    let phone = Phone::new();
    enroll_through_page(&page, &phone, "Silent phone", None).await;

    page.click("view-token").await;
    wait_challenge_number(&page).await;
    // The server's SSE stream says `expired` after the TTL; no fixed sleep, a deadline.
    let status = page
        .wait_text(
            "challenge-status",
            "expired",
            Duration::from_secs(SHORT_TTL_SECS) + WAIT,
        )
        .await;
    assert_eq!(status, "The request expired before it was approved.");
    page.wait_visible("challenge-retry").await;
    page.screenshot("expired-dialog").await;

    // Too late for the phone: nothing is pending any more.
    let pending: Value = serde_json::from_str(&phone.run(&["pending", "--json"])).unwrap();
    assert_eq!(pending["challenges"], json!([]), "{pending}");
    assert!(!page.dialog_open("token-dialog").await);
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// A `member` sees no Regenerate button (nor the activity log), and View Token is refused politely.
#[tokio::test]
async fn member_sees_no_regenerate_button() {
    let _serial = serial().await;
    let server = server::shared().await;
    let ws = server.create_workspace();
    let (email, password) = server.add_member(&ws, "member");
    let page = Page::open(&server.base, "member").await;
    sign_in(&page, &ws.slug, &email, &password).await;
    page.wait_text("account-user", "member", WAIT).await;

    assert!(
        !page.displayed("regenerate-token").await,
        "a member sees Regenerate"
    );
    assert_eq!(
        page.js(
            "return document.getElementById('regenerate-token').hidden;",
            vec![]
        )
        .await,
        json!(true)
    );
    assert!(
        !page.displayed("activity-section").await,
        "a member sees the audit log"
    );
    for section in ["members-section", "provisioning-section", "sso-section"] {
        assert!(!page.displayed(section).await, "a member sees {section}");
    }
    assert!(
        !page.displayed("schemas-section").await,
        "a member sees the SCIM schemas"
    );
    assert!(page.displayed("view-token").await);

    page.click("view-token").await;
    let message = page
        .wait_text("dirsync-message", "owners and admins", WAIT)
        .await;
    assert!(message.contains("Only the workspace"), "{message}");
    assert!(!page.dialog_open("challenge-dialog").await);
    page.screenshot("member-console").await;
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// An admin regenerates the token: confirm, approve on the phone, the new token shows with its
/// warning; the old token gets 401 at once and the new one 200.
#[tokio::test]
async fn admin_regenerates_the_token_and_the_old_one_stops_working() {
    let _serial = serial().await;
    let server = server::shared().await;
    let ws = server.create_workspace();
    let (email, password) = server.add_member(&ws, "admin");
    let page = Page::open(&server.base, "regenerate").await;
    sign_in(&page, &ws.slug, &email, &password).await;
    page.wait_text("account-user", "admin", WAIT).await;
    assert!(
        page.displayed("regenerate-token").await,
        "an admin sees no Regenerate"
    );
    let phone = Phone::new();
    enroll_through_page(&page, &phone, "Admin phone", None).await;

    let old = view_token(&page, &phone).await;
    close_token_dialog(&page).await;
    assert_eq!(scim_status(server, Some(&old)).await, 200);

    page.click("regenerate-token").await;
    page.wait_dialog("confirm-dialog").await;
    let warning = page.text("confirm-text").await;
    assert!(warning.contains("stops working at once"), "{warning}");
    page.screenshot("regenerate-confirm").await;
    page.click("confirm-ok").await;
    let n = wait_challenge_number(&page).await;
    assert_eq!(
        page.text("challenge-title").await,
        "Approve the new token on your phone"
    );
    let pending: Value = serde_json::from_str(&phone.run(&["pending", "--json"])).unwrap();
    assert_eq!(
        pending["challenges"][0]["action"], "scim_token.rotate",
        "{pending}"
    );
    page.screenshot("regenerate-challenge").await;
    phone.run(&["approve", "--number", &n.to_string()]);

    let new = wait_token(&page).await;
    assert_ne!(new, old, "Regenerate showed the old token");
    assert!(
        page.displayed("token-rotated").await,
        "no warning that the old token stopped"
    );
    assert_eq!(page.text("token-title").await, "New Directory Sync token");
    page.screenshot("regenerated-token").await;
    assert_eq!(
        scim_status(server, Some(&old)).await,
        401,
        "the old token still works"
    );
    assert_eq!(
        scim_status(server, Some(&new)).await,
        200,
        "the new token does not work"
    );
    close_token_dialog(&page).await;
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// An owner sets a grace period in the Token policy card; Regenerate then says the old token keeps
/// working, and the page shows until when while it does.
#[tokio::test]
async fn owner_sets_a_grace_period_and_the_page_shows_it_after_regenerating() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (_ws, page) = owner_page(server, "grace").await;
    let phone = Phone::new();
    enroll_through_page(&page, &phone, "Owner phone", None).await;
    let old = view_token(&page, &phone).await;
    close_token_dialog(&page).await;

    page.wait_visible("policy-section").await;
    assert!(!page.displayed("grace-notice").await);
    page.fill("policy-grace", "30").await;
    page.click("policy-save").await;
    page.wait_text("policy-message", "Policy saved", WAIT).await;

    page.click("regenerate-token").await;
    page.wait_dialog("confirm-dialog").await;
    let warning = page.text("confirm-text").await;
    assert!(
        warning.contains("keeps working for 30 minutes"),
        "{warning}"
    );
    page.click("confirm-ok").await;
    let n = wait_challenge_number(&page).await;
    phone.run(&["approve", "--number", &n.to_string()]);
    let new = wait_token(&page).await;
    page.screenshot("grace-new-token").await;
    assert_eq!(page.text("token-title").await, "New Directory Sync token");
    assert_ne!(new, old);
    close_token_dialog(&page).await;
    let notice = page
        .wait_text("grace-notice", "keeps working until", WAIT)
        .await;
    assert!(notice.contains("grace period"), "{notice}");
    page.screenshot("grace-period").await;
    assert_eq!(
        scim_status(server, Some(&old)).await,
        200,
        "in its grace period"
    );
    assert_eq!(scim_status(server, Some(&new)).await, 200);
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// Issue 15: the owner declares a SCIM extension schema on the page; a definition RFC 7643 §7 does
/// not allow is refused with the server's reason, and nothing is saved.
#[tokio::test]
async fn owner_declares_a_scim_extension_schema_on_the_page() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (_ws, page) = owner_page(server, "scim-schemas").await;
    page.wait_visible("schemas-section").await;
    let shown = page.value("schemas-json").await;
    assert_eq!(
        serde_json::from_str::<Value>(&shown).unwrap(),
        json!({"schemas": []})
    );
    let set = |v: Value| {
        page.js(
            "document.getElementById('schemas-json').value = arguments[0];",
            vec![json!(serde_json::to_string_pretty(&v).unwrap())],
        )
    };
    let urn = "urn:ietf:params:scim:schemas:extension:acme:2.0:User";
    set(json!({"schemas": [{"id": urn, "attributes": [{"name": "level", "type": "number"}]}]}))
        .await;
    page.click("schemas-save").await;
    let refused = page.wait_text("schemas-message", "not saved", WAIT).await;
    assert!(refused.contains("'type' must be one of"), "{refused}");
    set(json!({"schemas": [{"id": urn, "attributes": [{"name": "level", "type": "integer"}]}]}))
        .await;
    page.click("schemas-save").await;
    page.wait_text("schemas-message", "Schemas saved", WAIT)
        .await;
    let saved: Value = serde_json::from_str(&page.value("schemas-json").await).unwrap();
    assert_eq!(saved["schemas"][0]["id"], urn);
    assert_eq!(
        saved["schemas"][0]["attributes"][0]["mutability"],
        "readWrite"
    );
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// A person with a phone adds a second one: "Add a device" is a `device.enroll` step-up that the first
/// phone approves with the page's number; then the enrollment dialog's code enrolls the second phone.
/// On a 320 px wide screen.
#[tokio::test]
async fn a_second_phone_is_approved_on_the_first() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (_ws, page) = owner_page(server, "second-phone").await;
    let first = Phone::new();
    enroll_through_page(&page, &first, "First phone", None).await;
    page.narrow(320).await;

    page.click("add-device").await;
    let n = wait_challenge_number(&page).await;
    assert_eq!(
        page.text("challenge-title").await,
        "Approve the new phone on a phone you already have"
    );
    let intro = page.text("challenge-intro").await;
    assert!(intro.contains("To add a phone"), "{intro}");
    page.wait_text(
        "challenge-status",
        "Waiting for your approval on a phone you already have",
        WAIT,
    )
    .await;
    assert!(
        !page.dialog_open("enroll-dialog").await,
        "a code showed before the first phone approved"
    );
    let pending: Value = serde_json::from_str(&first.run(&["pending", "--json"])).unwrap();
    assert_eq!(
        pending["challenges"][0]["action"], "device.enroll",
        "{pending}"
    );
    assert_fits_the_width(&page).await;
    page.screenshot("step-up-320").await;

    first.run(&["approve", "--number", &n.to_string()]);
    let second = Phone::new();
    page.wait_dialog("enroll-dialog").await;
    assert!(
        !page.dialog_open("challenge-dialog").await,
        "the challenge dialog stays open under the code"
    );
    assert_fits_the_width(&page).await;
    enroll_from_dialog(&page, &second, "Second phone", Some("second-code-320")).await;

    let list = page.wait_text("device-list", "First phone", WAIT).await;
    assert!(list.contains("Second phone"), "{list}");
    assert_eq!(
        page.js(
            "return document.querySelectorAll('#device-list > li').length;",
            vec![]
        )
        .await,
        json!(2)
    );
    // The second phone is a phone of this person: it sees the next step-up.
    page.click("view-token").await;
    let n = wait_challenge_number(&page).await;
    second.run(&["approve", "--number", &n.to_string()]);
    wait_token(&page).await;
    close_token_dialog(&page).await;
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// Long after sign-in, a first phone needs the password again: the dialog says so, refuses a wrong
/// password (and the session goes on), and with the right one shows the code. In dark mode, 320 px wide.
#[tokio::test]
async fn an_old_sign_in_asks_for_the_password_before_a_first_phone() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (ws, page) = owner_page(server, "reauth").await;
    server
        .age_session_authentication(&ws.slug, &ws.owner_email, 601)
        .await;
    page.narrow(320).await;
    page.dark().await;

    page.click("add-device").await;
    page.wait_dialog("reauth-dialog").await;
    assert!(!page.dialog_open("enroll-dialog").await);
    assert_eq!(
        focused(&page).await,
        "reauth-password",
        "the password field has no focus"
    );
    let label = page
        .js(
            "const f = document.getElementById('reauth-password');
             return { label: f.labels[0] ? f.labels[0].textContent.trim() : null, type: f.type };",
            vec![],
        )
        .await;
    assert_eq!(label, json!({"label": "Your password", "type": "password"}));
    assert!(page.displayed("reauth-submit").await);
    assert!(!page.displayed("reauth-sso-go").await);
    assert_fits_the_width(&page).await;
    page.screenshot("reauth-dark-320").await;

    page.fill("reauth-password", "not-the-password").await;
    page.click("reauth-submit").await;
    let said = page.wait_text("reauth-message", "not right", WAIT).await;
    assert_eq!(said, "That password is not right. Try again.");
    assert_eq!(
        page.value("reauth-password").await,
        "",
        "the wrong password stays in the field"
    );
    assert!(page.dialog_open("reauth-dialog").await);
    assert!(
        page.displayed("account").await,
        "a wrong password ended the session"
    );
    page.screenshot("reauth-wrong-dark-320").await;

    page.fill("reauth-password", &ws.owner_password).await;
    page.click("reauth-submit").await;
    let phone = Phone::new();
    enroll_from_dialog(
        &page,
        &phone,
        "Phone after reauth",
        Some("reauth-code-dark-320"),
    )
    .await;
    assert!(!page.dialog_open("reauth-dialog").await);
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// Back from confirming who one is at the identity provider (`?reauth=ok`): the page says so once and
/// takes it out of the address; another value is neither shown nor kept.
#[tokio::test]
async fn back_from_single_sign_on_reauth_says_so_once() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (_ws, page) = owner_page(server, "reauth-return").await;

    page.goto("/?reauth=ok#main").await;
    let said = page
        .wait_text("devices-message", "single sign-on", WAIT)
        .await;
    assert_eq!(
        said,
        "You confirmed who you are with single sign-on. You can add a device now."
    );
    let address = page
        .js(
            "return location.pathname + location.search + location.hash;",
            vec![],
        )
        .await;
    assert_eq!(address, json!("/#main"));
    assert_eq!(focused(&page).await, "add-device");

    page.goto("/?reauth=%3Cb%3Eforged%3C%2Fb%3E&keep=1").await;
    page.wait_visible("view-token").await;
    page.wait_js(
        "the address without reauth",
        WAIT,
        "return location.search === '?keep=1';",
        vec![],
    )
    .await;
    let body = page.js("return document.body.textContent;", vec![]).await;
    assert!(
        !body.as_str().unwrap().contains("forged"),
        "an unknown value was echoed"
    );
    assert_eq!(page.text("devices-message").await, "");
    assert_no_console_errors(&page).await;
    page.close().await;
}
