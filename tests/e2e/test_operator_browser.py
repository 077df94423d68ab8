"""An operator in a real browser (headless Chromium): a silence added from the status page's form
mutes a real alarm, which is mailed as `silence_ended` once the silence is expired from the
page; acknowledging from the alarm list stops that alarm's reminders."""

from __future__ import annotations

import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from tests.e2e.test_alarm_mail import account, post_alarm, route, subjects
from tests.e2e.test_silences import decisions, resend_after_the_repeat_interval, wait_decision
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import SmtpTestServer


def text_of(browser: webdriver.Chrome, element_id: str) -> str:
    """The text of the element `element_id` on the page shown now; "" while the browser is
    between pages (a form posted and redirected: the element found may be gone when read)."""
    try:
        return str(browser.find_element(By.ID, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_a_silence_from_the_form_mutes_an_alarm_until_it_is_expired_from_the_page(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    with SmtpTestServer() as smtp:
        proc = NotifierProcess(tmp_path, {"accounts": [account(smtp)], "routes": [route()]})
        proc.start()
        try:
            browser.get(f"http://127.0.0.1:{proc.http_port}/")
            form = browser.find_element(By.ID, "add-silence")
            form.find_element(By.NAME, "devices").send_keys("gw21*")
            duration = form.find_element(By.NAME, "duration")
            duration.clear()
            duration.send_keys("30m")
            form.find_element(By.NAME, "comment").send_keys("firmware update")
            form.find_element(By.NAME, "created_by").send_keys("alice")
            form.find_element(By.XPATH, ".//button[@type='submit']").click()
            silences = wait_for(
                lambda: "firmware update" in (text := text_of(browser, "silences-list")) and text,
                what="the silence listed on the page",
            )
            assert "devices: gw21*" in silences and "alice" in silences

            assert post_alarm(proc, host="gw21a", code="0x00210001").status_code == 200
            wait_decision(proc, "0x00210001", "silenced")
            assert not any("gw21a" in s for s in subjects(smtp.received))

            browser.find_element(By.XPATH, "//table[@id='silences-list']//button").click()
            wait_for(
                lambda: "expired" in text_of(browser, "silences-list"),
                what="the silence shown as expired",
            )
            mail = wait_for(
                lambda: [m for m in smtp.received if "gw21a" in str(m.message["Subject"])],
                what="the alarm mailed once its silence ended",
            )[0]
            assert str(mail.message["Subject"]).startswith("[ALARM Major, still active]")
            assert "silence_ended" in decisions(proc, "0x00210001")
        finally:
            proc.stop()


def test_acknowledging_from_the_alarm_list_stops_the_reminders(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    with SmtpTestServer() as smtp:
        proc = NotifierProcess(
            tmp_path, {"accounts": [account(smtp)], "routes": [route(repeat_interval_s=1)]}
        )
        proc.start()
        try:
            assert post_alarm(proc, host="gw22", code="0x00220001").status_code == 200
            wait_for(lambda: smtp.received, what="the alarm mailed")
            # Unacknowledged, a re-send after the repeat interval is a reminder.
            time.sleep(1.2)
            assert post_alarm(proc, host="gw22", code="0x00220001").status_code == 200
            wait_for(lambda: len(smtp.received) == 2, what="the reminder")

            browser.get(f"http://127.0.0.1:{proc.http_port}/alarms")
            row = browser.find_element(By.XPATH, "//table[@id='alarms']//tr[td[text()='gw22']]")
            row.find_element(By.NAME, "comment").send_keys("replacing the PSU")
            row.find_element(By.NAME, "by").send_keys("bob")
            row.find_element(By.XPATH, ".//button[text()='acknowledge']").click()
            wait_for(
                lambda: "acknowledged by bob" in text_of(browser, "alarms"),
                what="the alarm shown as acknowledged",
            )

            resend_after_the_repeat_interval(proc, "gw22", "0x00220001")
            assert len(smtp.received) == 2
        finally:
            proc.stop()
