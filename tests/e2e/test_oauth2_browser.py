"""A person in a real browser (headless Debian Chromium, driven by Selenium): /oauth2/ →
Authorize → the provider's login and consent page → back to /oauth2/callback → "Send test
mail" → the mail arrives, authenticated with XOAUTH2.

Needs the Debian packages chromium and chromium-driver (scripts/install-browser-deps.sh)."""

from __future__ import annotations

from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.authserver import AuthServer
from tests.certs import TestPKI
from tests.oauth2.harness import PASSWORD, RECIPIENT, USER, oauth2_config, smtp_server
from tests.service import NotifierProcess, wait_for

SCREENSHOT = Path("/tmp/notifier-oauth2-page.png")


def test_sign_in_with_a_browser_then_send_a_test_mail(
    tmp_path: Path, pki: TestPKI, browser: webdriver.Chrome
) -> None:
    with AuthServer() as server, smtp_server(pki, server) as smtp:
        server.add_user(USER, PASSWORD)
        proc = NotifierProcess(tmp_path)
        proc.overrides = oauth2_config(
            smtp,
            pki,
            {
                "mode": "exchange",
                "tenant": "contoso.onmicrosoft.com",
                "client_id": "notifier-app",
                "client_secret": "client secret value",
                "token_endpoint": server.token_url,
                "authorization_url": server.authorize_url,
            },
        )
        redirect = f"http://localhost:{proc.http_port}/oauth2/callback"
        server.add_client("notifier-app", secret="client secret value", redirect_uris=[redirect])
        proc.start()
        try:
            wait = WebDriverWait(browser, 20)
            browser.get(f"http://localhost:{proc.http_port}/oauth2/")
            row = browser.find_element(By.ID, "account-ops")
            assert "needs authorization" in row.text
            assert redirect in row.text  # what to register at the provider
            browser.save_screenshot(str(SCREENSHOT))

            row.find_element(By.XPATH, ".//button[text()='Authorize']").click()
            try:
                wait.until(ec.presence_of_element_located((By.NAME, "password")))
            except Exception:
                raise AssertionError(browser.current_url + browser.page_source[:800]) from None
            assert "Sign in" in browser.page_source
            assert browser.find_element(By.NAME, "username").get_attribute("value") == USER
            browser.find_element(By.NAME, "password").send_keys(PASSWORD)
            browser.find_element(By.XPATH, "//button[@value='allow']").click()

            notice = wait.until(ec.presence_of_element_located((By.ID, "notice")))
            assert "Account ops is authorized" in notice.text
            assert browser.current_url.startswith(redirect)
            browser.find_element(By.ID, "send-test-mail").click()
            notice = wait.until(
                ec.text_to_be_present_in_element((By.ID, "notice"), "Test mail accepted")
            )
            result = browser.find_element(By.ID, "notice").text
            assert f"Test mail accepted for {RECIPIENT}" in result
            assert "auth used: XOAUTH2" in result

            mail = wait_for(lambda: smtp.received, what="the test mail")[0]
            assert mail.auth_mechanism == "XOAUTH2" and mail.auth_identity == USER
            assert mail.rcpt_tos == (RECIPIENT,)
            assert "ok" in browser.find_element(By.ID, "account-ops").text.split()
            browser.save_screenshot(str(SCREENSHOT.with_name("notifier-oauth2-after.png")))
        finally:
            proc.stop()
