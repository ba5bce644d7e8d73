//! Issue 16 in headless Chromium against the real binary, as a person does it: the members section
//! (an invitation, the invitee's first sign-in with the one-time password, their phone and the token;
//! a promotion approved on the owner's phone; a removal), the provisioning section after a real SCIM
//! failure, the single sign-on settings saved against the local OpenID provider, and the support
//! page's rotation approved by the companion simulator. Every test fails on a console error or a
//! CSP violation. With `ASSENT_UPDATE_DOCS=1` the screenshots of each section are written to
//! `docs/` for the README.

use super::*;
use crate::support::oidc::NodeProvider;
use crate::support::scim::{Scim, USER_URN};
use reqwest::Method;

/// A picture of one element (a section of the page) in full, however tall, saved under
/// `target/e2e-screenshots/` and, with `ASSENT_UPDATE_DOCS=1`, as `docs/<doc>`.
async fn section_shot(page: &Page, id: &str, doc: &str) {
    use base64::Engine;
    let rect = page
        .js(
            "const r = document.getElementById(arguments[0]).getBoundingClientRect();
             return { x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height, scale: 1 };",
            vec![json!(id)],
        )
        .await;
    let shot = page
        .cdp(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true, "clip": rect }),
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64 PNG");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let path = support_browser::chrome::screenshot_dir().join(format!("{}-{doc}", page.name));
    std::fs::write(&path, &png).expect("write the screenshot");
    if std::env::var_os("ASSENT_UPDATE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::copy(&path, docs.join(doc)).expect("copy the screenshot to docs/");
    }
}

/// Chooses `value` in a `<select>` as the keyboard would, and tells the page.
async fn choose(page: &Page, id: &str, value: &str) {
    let chosen = page
        .js(
            "const s = document.getElementById(arguments[0]);
             s.focus();
             s.value = arguments[1];
             s.dispatchEvent(new Event('change', { bubbles: true }));
             return s.value;",
            vec![json!(id), json!(value)],
        )
        .await;
    assert_eq!(chosen, json!(value), "#{id} has no option {value}");
}

/// The id of the member with this e-mail, as the members section lists them.
async fn member_row_id(page: &Page, email: &str) -> i64 {
    page.wait_js(
        &format!("{email} in the members list"),
        WAIT,
        "const row = [...document.querySelectorAll('#members-list tbody tr')]
           .find((tr) => tr.querySelector('th').textContent === arguments[0]);
         return row ? Number(row.dataset.memberId) : null;",
        vec![json!(email)],
    )
    .await
    .as_i64()
    .unwrap()
}

/// The cells of the member's row: [e-mail, role, phones, last sign-in, single sign-on].
async fn member_row(page: &Page, email: &str) -> Value {
    page.js(
        "const row = [...document.querySelectorAll('#members-list tbody tr')]
           .find((tr) => tr.querySelector('th').textContent === arguments[0]);
         return row ? [...row.cells].slice(0, 5).map((c) => c.textContent.trim()) : null;",
        vec![json!(email)],
    )
    .await
}

async fn owner_with_phone(server: &TestServer, name: &str) -> (Workspace, Page, Phone) {
    let ws = acme_workspace(server);
    let page = Page::open(&server.base, name).await;
    sign_in(&page, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let phone = Phone::new();
    enroll_through_page(&page, &phone, "Ada's Pixel", None).await;
    (ws, page, phone)
}

#[tokio::test]
async fn members_an_invitee_signs_in_with_the_one_time_password_enrolls_and_views_the_token() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (ws, page, phone) = owner_with_phone(server, "members-invite").await;
    page.wait_visible("members-list").await;
    member_row_id(&page, &ws.owner_email).await;

    // Invite an admin: the one-time password shows once, in its own field.
    let email = format!("grace-{}@acme.example", server::unique("x"));
    page.fill("invite-email", &email).await;
    choose(&page, "invite-role", "admin").await;
    page.click("invite-submit").await;
    let password = page
        .wait_js(
            "the one-time password",
            WAIT,
            "return document.getElementById('invite-password').value || null;",
            vec![],
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        focused(&page).await,
        "invite-password",
        "the focus goes to the password"
    );
    assert!(page.displayed("invite-password").await);
    assert_eq!(page.value("invite-email").await, "");
    member_row_id(&page, &email).await;
    let row = member_row(&page, &email).await;
    assert_eq!(row[1], "Admin", "{row}");
    assert_eq!(row[2], "None", "{row}");
    section_shot(&page, "members-section", "members.png").await;

    // The same e-mail again, from the keyboard alone (Enter submits the form): refused in words,
    // and the password field is gone.
    page.fill("invite-email", &format!("{email}\u{E007}")).await;
    page.wait_text("invite-message", "already a member", WAIT)
        .await;
    assert_eq!(page.value("invite-password").await, "");

    // Readable at 320 px and in dark mode.
    page.narrow(320).await;
    page.dark().await;
    assert_fits_the_width(&page).await;
    assert_no_console_errors(&page).await;

    // The invitee signs in with it, enrolls their first phone, and views the token behind it.
    let invitee = Page::open(&server.base, "members-invitee").await;
    sign_in(&invitee, &ws.slug, &email, &password).await;
    let their_phone = Phone::new();
    enroll_through_page(&invitee, &their_phone, "Grace's iPhone", None).await;
    let token = view_token(&invitee, &their_phone).await;
    assert_token_not_kept(&invitee, &token).await;
    close_token_dialog(&invitee).await;
    assert_no_console_errors(&invitee).await;
    invitee.close().await;

    // The owner's list now shows their phone and sign-in.
    page.click("members-refresh").await;
    page.wait_js(
        "the invitee's phone in the list",
        WAIT,
        "const row = [...document.querySelectorAll('#members-list tbody tr')]
           .find((tr) => tr.querySelector('th').textContent === arguments[0]);
         return row && row.cells[2].textContent.startsWith('1');",
        vec![json!(email)],
    )
    .await;
    let row = member_row(&page, &email).await;
    assert_ne!(row[3], "Never", "{row}");

    // Their phone is lost: the owner resets it, approving on the owner's own phone.
    let id = member_row_id(&page, &email).await;
    page.click(&format!("member-{id}-reset")).await;
    page.wait_dialog("confirm-dialog").await;
    page.click("confirm-ok").await;
    let n = wait_challenge_number(&page).await;
    phone.run(&["approve", "--number", &n.to_string()]);
    page.wait_text(
        "members-message",
        &format!("1 phone of {email} removed"),
        WAIT,
    )
    .await;
    page.wait_js(
        "no phone left in the list",
        WAIT,
        "const row = [...document.querySelectorAll('#members-list tbody tr')]
           .find((tr) => tr.querySelector('th').textContent === arguments[0]);
         return row && row.cells[2].textContent === 'None';",
        vec![json!(email)],
    )
    .await;
    assert_no_console_errors(&page).await;
    server.assert_log_free_of(&[("invitee's password", &password)]);
    page.close().await;
}

#[tokio::test]
async fn members_an_invitation_link_opens_a_page_where_the_invitee_chooses_a_password() {
    let _serial = serial().await;
    let server = server::shared().await;
    let ws = acme_workspace(server);
    let page = Page::open(&server.base, "members-link").await;
    sign_in(&page, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let email = format!("hedy-{}@acme.example", server::unique("x"));
    page.fill("invite-email", &email).await;
    page.click("invite-delivery-link").await;
    page.click("invite-submit").await;
    let link = page
        .wait_js(
            "the invitation link",
            WAIT,
            "return document.getElementById('invite-link').value || null;",
            vec![],
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(focused(&page).await, "invite-link");
    assert!(
        !page.displayed("invite-password").await,
        "no password with a link"
    );
    let fragment = link
        .strip_prefix(&server.public_url)
        .unwrap_or_else(|| panic!("{link}"))
        .to_owned();
    assert!(fragment.starts_with("/#invitation="), "{fragment}");
    assert_no_console_errors(&page).await;
    page.close().await;

    // The invitee opens the link: the token leaves the address bar, they choose a password.
    let invitee = Page::open(&server.base, "members-link-invitee").await;
    invitee.goto(&fragment).await;
    invitee.js("location.reload();", vec![]).await;
    invitee.wait_visible("invitation-password").await;
    let address = invitee.js("return location.href;", vec![]).await;
    assert!(
        !address.as_str().unwrap().contains("invitation="),
        "{address}"
    );
    invitee
        .fill("invitation-password", "hedy's own passphrase")
        .await;
    invitee.fill("invitation-confirm", "not the same one").await;
    invitee.click("invitation-submit").await;
    invitee
        .wait_text("invitation-message", "differ", WAIT)
        .await;
    invitee
        .fill("invitation-password", "hedy's own passphrase")
        .await;
    invitee
        .fill("invitation-confirm", "hedy's own passphrase")
        .await;
    invitee.click("invitation-submit").await;
    invitee.wait_visible("view-token").await;
    invitee
        .wait_text("account-user", &format!("{email} · member"), WAIT)
        .await;
    assert_no_console_errors(&invitee).await;
    invitee.close().await;

    // The link is spent; the chosen password signs in.
    let again = Page::open(&server.base, "members-link-again").await;
    again.goto(&fragment).await;
    again.js("location.reload();", vec![]).await;
    again.wait_visible("invitation-password").await;
    again
        .fill("invitation-password", "someone else's passphrase")
        .await;
    again
        .fill("invitation-confirm", "someone else's passphrase")
        .await;
    again.click("invitation-submit").await;
    again
        .wait_text("invitation-message", "used or has expired", WAIT)
        .await;
    again.close().await;
    let mut b = support::Browser::new(server);
    b.login_ok(&ws.slug, &email, "hedy's own passphrase").await;
}

/// Inviting an admin long after signing in asks for the password first, then makes the same invitation.
#[tokio::test]
async fn members_inviting_an_admin_after_a_while_asks_for_the_password_first() {
    let _serial = serial().await;
    let server = server::shared().await;
    let ws = acme_workspace(server);
    let page = Page::open(&server.base, "members-reauth").await;
    sign_in(&page, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    server
        .age_session_authentication(&ws.slug, &ws.owner_email, 601)
        .await;
    let email = format!("ida-{}@acme.example", server::unique("x"));
    page.fill("invite-email", &email).await;
    choose(&page, "invite-role", "admin").await;
    page.click("invite-submit").await;
    page.wait_dialog("reauth-dialog").await;
    page.fill("reauth-password", &ws.owner_password).await;
    page.click("reauth-submit").await;
    page.wait_js(
        "the one-time password after the confirmation",
        WAIT,
        "return document.getElementById('invite-password').value || null;",
        vec![],
    )
    .await;
    assert!(!page.dialog_open("reauth-dialog").await);
    page.wait_text("invite-who", &email, WAIT).await;
    assert_no_console_errors(&page).await;
    page.close().await;
}

#[tokio::test]
async fn members_a_promotion_waits_for_the_owners_phone_and_a_removal_ends_the_member() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (ws, page, phone) = owner_with_phone(server, "members-promote").await;
    let (email, password) = server.add_member(&ws, "member");
    page.click("members-refresh").await;
    let id = member_row_id(&page, &email).await;

    // Promote to admin: the challenge dialog with its number; the owner's phone approves.
    choose(&page, &format!("member-{id}-role"), "admin").await;
    page.click(&format!("member-{id}-change")).await;
    let n = wait_challenge_number(&page).await;
    assert_eq!(
        page.text("challenge-title").await,
        "Approve the promotion on your phone"
    );
    let pending = phone.run(&["pending", "--json"]);
    assert!(pending.contains("member.promote"), "{pending}");
    assert_eq!(
        member_row(&page, &email).await[1],
        "Member",
        "not before the approval"
    );
    phone.run(&["approve", "--number", &n.to_string()]);
    page.wait_text("members-message", "is now admin", WAIT)
        .await;
    page.wait_js(
        "the new role in the list",
        WAIT,
        "const row = [...document.querySelectorAll('#members-list tbody tr')]
           .find((tr) => tr.querySelector('th').textContent === arguments[0]);
         return row && row.cells[1].textContent === 'Admin';",
        vec![json!(email)],
    )
    .await;
    assert!(!page.dialog_open("challenge-dialog").await);

    // The last owner cannot demote themself: the server's words show.
    let owner_id = member_row_id(&page, &ws.owner_email).await;
    choose(&page, &format!("member-{owner_id}-role"), "member").await;
    page.click(&format!("member-{owner_id}-change")).await;
    page.wait_text("members-message", "last owner", WAIT).await;

    // Remove, after a confirmation.
    page.click(&format!("member-{id}-remove")).await;
    page.wait_dialog("confirm-dialog").await;
    page.click("confirm-ok").await;
    page.wait_text("members-message", "was removed", WAIT).await;
    page.wait_js(
        "the removed member to leave the list",
        WAIT,
        "return ![...document.querySelectorAll('#members-list tbody tr')]
           .some((tr) => tr.querySelector('th').textContent === arguments[0]);",
        vec![json!(email)],
    )
    .await;
    let mut gone = support::Browser::new(server);
    assert_eq!(
        gone.login(&ws.slug, &email, &password)
            .await
            .status()
            .as_u16(),
        401
    );
    assert_no_console_errors(&page).await;
    page.close().await;
}

#[tokio::test]
async fn provisioning_shows_a_real_scim_failure_first_with_the_days_counts() {
    let _serial = serial().await;
    let server = server::shared().await;
    let (_ws, page, phone) = owner_with_phone(server, "provisioning").await;
    let token = view_token(&page, &phone).await;
    close_token_dialog(&page).await;

    // Entra ID creates a user, then sends the same user again: 201, then a real 409.
    let scim = Scim::new(server, &token);
    let user = json!({"schemas": [USER_URN], "userName": "lin@acme.example", "externalId": "e-1", "active": true});
    assert_eq!(
        scim.send(Method::POST, "/Users", Some(&user), &[])
            .await
            .status,
        201
    );
    assert_eq!(
        scim.send(Method::POST, "/Users", Some(&user), &[])
            .await
            .status,
        409
    );
    assert_eq!(
        scim.send(
            Method::GET,
            "/Users?filter=userName%20eq%20%22lin%40acme.example%22",
            None,
            &[]
        )
        .await
        .status,
        200
    );

    page.click("provisioning-refresh").await;
    page.wait_text("provisioning-requests", "3", WAIT).await;
    assert_eq!(page.text("provisioning-failures").await, "1");
    assert_ne!(page.text("provisioning-last-call").await, "Never");
    // Newest first, then failures first on demand.
    assert_eq!(
        log_statuses(&page).await,
        json!(["200", "409failed", "201"])
    );
    page.click("provisioning-failures-first").await;
    page.wait_js(
        "the failure on top",
        WAIT,
        "const first = document.querySelector('#provisioning-log tbody tr');
         return first && first.cells[1].textContent.startsWith('409')
           && document.querySelectorAll('#provisioning-log tbody tr').length === 3;",
        vec![],
    )
    .await;
    assert_eq!(
        log_statuses(&page).await,
        json!(["409failed", "200", "201"])
    );
    let checklist = page.text("checklist").await;
    assert!(
        checklist.contains("Tenant URL") && checklist.contains("userPrincipalName"),
        "{checklist}"
    );
    assert_eq!(
        page.value("checklist-tenant-url").await,
        format!("{}/v1/scim/v2", server.public_url)
    );
    choose(&page, "checklist-idp", "okta").await;
    page.wait_text("checklist", "SCIM connector base URL", WAIT)
        .await;
    choose(&page, "checklist-idp", "entra").await;
    section_shot(&page, "provisioning-section", "provisioning.png").await;
    assert_no_console_errors(&page).await;
    page.close().await;
}

/// The status cells of the provisioning log, top to bottom.
async fn log_statuses(page: &Page) -> Value {
    page.js(
        "return [...document.querySelectorAll('#provisioning-log tbody tr')]
           .map((tr) => tr.cells[1].textContent.trim());",
        vec![],
    )
    .await
}

/// The server of the SSO test: it accepts a provider on loopback (the local oidc-provider).
async fn loopback_sso_server() -> &'static TestServer {
    static SERVER: OnceCell<TestServer> = OnceCell::const_new();
    SERVER
        .get_or_init(|| {
            TestServer::start(ServerOptions {
                env: vec![("ASSENT_SSO_ALLOW_LOOPBACK".into(), "1".into())],
                ..ServerOptions::default()
            })
        })
        .await
}

#[tokio::test]
async fn sso_settings_are_checked_against_the_provider_and_saved_without_showing_the_secret() {
    let _serial = serial().await;
    let server = loopback_sso_server().await;
    let ws = acme_workspace(server);
    let page = Page::open(&server.base, "sso-settings").await;
    sign_in(&page, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let redirect_uri = format!("{}/v1/sso/callback", server.public_url);
    page.wait_visible("sso-issuer").await;
    assert_eq!(page.value("sso-redirect-uri").await, redirect_uri);
    let secret = format!("client-secret-{}", server::unique("s"));
    let provider = NodeProvider::start("assent-console", &secret, &redirect_uri).await;

    // A provider that does not answer is refused before anything is saved.
    page.fill("sso-issuer", "http://127.0.0.1:9/nothing-here")
        .await;
    page.fill("sso-client-id", "assent-console").await;
    page.fill("sso-client-secret", &secret).await;
    page.click("sso-save").await;
    page.wait_text("sso-message", "Not saved", WAIT).await;

    page.fill("sso-issuer", &provider.issuer).await;
    page.fill("sso-domains", "acme.example, example.org").await;
    page.click("sso-save").await;
    page.wait_text("sso-message", "Saved", WAIT).await;
    assert_eq!(
        page.value("sso-client-secret").await,
        "",
        "the secret stays in the page"
    );
    assert_eq!(page.value("sso-domains").await, "acme.example, example.org");
    // What the server kept: the settings, never the secret in plain text.
    let saved = page
        .js(
            "return fetch('/v1/console/sso').then((r) => r.json());",
            vec![],
        )
        .await;
    assert_eq!(saved["issuer"], provider.issuer.as_str(), "{saved}");
    assert_eq!(
        saved["allowed_email_domains"],
        json!(["acme.example", "example.org"])
    );
    assert!(saved.get("client_secret").is_none(), "{saved}");
    server
        .assert_db_free_of(&[("client secret", &secret)])
        .await;
    server.assert_log_free_of(&[("client secret", &secret)]);
    section_shot(&page, "sso-section", "sso.png").await;
    assert_no_console_errors(&page).await;
    page.close().await;
}

#[tokio::test]
async fn support_page_rotates_a_token_approved_by_the_simulator_and_never_shows_it() {
    let _serial = serial().await;
    let server = server::shared().await;
    let ws = acme_workspace(server);
    let staff_email = format!("{}@support.example", server::unique("sam"));
    let staff = server.cli(&["staff", "add", "--email", &staff_email]);
    let staff_password = staff["password"].as_str().unwrap().to_owned();

    let page = Page::open(&server.base, "support").await;
    page.goto("/support").await;
    page.wait_visible("support-email").await;
    page.fill("support-email", &staff_email).await;
    page.fill("support-password", "wrong").await;
    page.click("support-submit").await;
    page.wait_text("signin-message", "Sign-in failed", WAIT)
        .await;
    page.fill("support-password", &staff_password).await;
    page.click("support-submit").await;
    page.wait_text("account-user", &staff_email, WAIT).await;

    // Their first phone, with the QR code.
    let phone = Phone::new();
    enroll_through_page(&page, &phone, "Sam's Pixel", None).await;

    // An unknown workspace, then the real one: the six fields.
    page.fill("support-workspace", "no-such-workspace").await;
    page.click("support-lookup").await;
    page.wait_text("lookup-message", "No workspace", WAIT).await;
    page.fill("support-workspace", &ws.slug).await;
    page.click("support-lookup").await;
    page.wait_text("summary-slug", &ws.slug, WAIT).await;
    assert_eq!(page.text("summary-name").await, "Acme");
    assert_eq!(page.text("summary-errors").await, "0");
    assert_eq!(page.text("summary-last-request").await, "Never");

    // Rotate with a ticket and a reason: the number, the stream, the result; never the token.
    page.fill("support-ticket", "SUP-1604").await;
    page.fill(
        "support-reason",
        "Customer reports the token leaked in a screenshot",
    )
    .await;
    page.click("support-rotate").await;
    let n = wait_challenge_number(&page).await;
    page.wait_text("challenge-status", "Waiting", WAIT).await;
    phone.run(&["approve", "--number", &n.to_string()]);
    page.wait_text("rotate-message", "was rotated", WAIT).await;
    page.wait_text("summary-rotated-by", &staff_email, WAIT)
        .await;
    let html = page
        .js("return document.documentElement.outerHTML;", vec![])
        .await;
    assert!(
        !html.as_str().unwrap().contains("assent_scim_"),
        "a token is on the page"
    );
    section_shot(&page, "support-view", "support.png").await;

    page.narrow(320).await;
    page.dark().await;
    assert_fits_the_width(&page).await;
    assert_no_console_errors(&page).await;
    page.close().await;
}
