"""License holders and operators using license-console in real headless Chromium.

Run by Tests/EndToEndTests/ConsoleBrowserTests.swift against a stack it started and seeded;
everything it needs comes from the environment. Each journey saves a screenshot.
"""
import os
import sys

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["CONSOLE_URL"]
SHOTS = os.environ["SCREENSHOTS"]
LICENSE_ID = os.environ["LICENSE_ID"]
failures = []


def browser(width=1280, height=1000):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    return driver


def wait_for(driver, text, seconds=30):
    """Waits until the page shows `text` (a click's navigation may still be loading)."""
    try:
        # The page source, not an element: a page that is being replaced has no stale elements.
        WebDriverWait(driver, seconds, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(lambda d: text in d.page_source)
        return True
    except Exception:
        return False


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAILED:", what, file=sys.stderr)


def shot(driver, name):
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def sign_in_holder(driver, key):
    driver.get(URL + "/sign-in")
    field = driver.find_element(By.ID, "license_key")
    field.send_keys(key)
    field.send_keys(Keys.ENTER)  # the keyboard alone signs in
    wait_for(driver, "Your licenses")


def sign_in_operator(driver, key):
    driver.get(URL + "/sign-in")
    driver.find_element(By.ID, "api_key").send_keys(key)
    driver.find_element(By.XPATH, "//button[text()='Sign in with API key']").click()
    wait_for(driver, "Sign out")


def no_alert(driver, what):
    try:
        driver.switch_to.alert
        failures.append(what + ": a script ran")
    except NoAlertPresentException:
        pass


def holder_journey():
    driver = browser(390, 1400)  # a phone-sized window
    try:
        sign_in_holder(driver, os.environ["HOLDER_KEY"])
        body = driver.find_element(By.TAG_NAME, "body").text
        check("Your licenses" in body, "holder: the portal opens after sign-in")
        check("Active." in body, "holder: the state in words")
        check("not in your plan" in body and "cloud-sync" in body, "holder: features not included are named")
        check("grace period until" in body, "holder: what happens at expiry")
        check(driver.find_element(By.LINK_TEXT, "Renew this license").get_attribute("href").startswith("http"), "holder: a renewal link")
        labels = driver.find_elements(By.CSS_SELECTOR, "label[for]")
        check(all(driver.find_elements(By.ID, label.get_attribute("for")) for label in labels), "holder: every label names a control")
        check(driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1"), "holder: no sideways scrolling on a phone")
        shot(driver, "holder-portal")
        buttons = driver.find_elements(By.XPATH, "//button[text()='Deactivate']")
        check(len(buttons) == 1, "holder: one machine with a Deactivate button")
        if buttons:
            buttons[0].click()
            check(wait_for(driver, "The machine is deactivated") and "No machine is activated" in driver.find_element(By.TAG_NAME, "body").text,
                  "holder: the machine is freed")
        no_alert(driver, "holder page")
    finally:
        driver.quit()


def operator_journey():
    driver = browser()
    try:
        sign_in_operator(driver, os.environ["ISSUER_KEY"])
        check("Licenses" in driver.title, "issuer: lands on the license search")
        field = driver.find_element(By.ID, "q")
        field.send_keys(os.environ["KEY_PREFIX"])
        field.send_keys(Keys.ENTER)
        wait_for(driver, LICENSE_ID)
        driver.find_element(By.LINK_TEXT, LICENSE_ID).click()
        wait_for(driver, "Timeline")
        body = driver.find_element(By.TAG_NAME, "body").text
        check("Timeline" in body and "Machines" in body and "Compliance alerts" in body, "issuer: the license page has its parts")
        no_alert(driver, "license page with a script-like product name")
        check("<script>alert(1)</script>" in body, "issuer: the product's name is shown as text")
        shot(driver, "operator-license")
        driver.find_element(By.LINK_TEXT, "Revoke").click()
        wait_for(driver, "cannot be undone")
        driver.find_element(By.ID, "reason").send_keys("refund")
        driver.find_element(By.XPATH, "//button[text()='Revoke']").click()
        check(wait_for(driver, "Revoked."), "issuer: the license is revoked")
        shot(driver, "operator-revoked")
    finally:
        driver.quit()
    holder = browser()
    try:
        sign_in_holder(holder, os.environ["HOLDER_KEY"])
        check(wait_for(holder, "Revoked"), "holder: the portal then says revoked")
        shot(holder, "holder-revoked")
    finally:
        holder.quit()


def support_journey():
    driver = browser()
    try:
        sign_in_operator(driver, os.environ["SUPPORT_KEY"])
        driver.get(URL + "/licenses/" + os.environ["OTHER_LICENSE_ID"])
        check(not driver.find_elements(By.LINK_TEXT, "Revoke"), "support: no revoke button")
        check(not driver.find_elements(By.LINK_TEXT, "Suspend"), "support: no suspend button")
        check(driver.find_elements(By.XPATH, "//button[text()='Deactivate']") or "No machine" in driver.page_source, "support: machines shown")
        shot(driver, "support-license")
        driver.get(URL + "/reports?kind=usage")
        check(driver.find_elements(By.LINK_TEXT, "Download CSV") or "Your role" in driver.page_source, "support: reports page renders")
    finally:
        driver.quit()


def auditor_reports_journey():
    driver = browser()
    try:
        sign_in_operator(driver, os.environ["AUDITOR_KEY"])
        driver.get(URL + "/reports?kind=compliance")
        check("Compliance" in driver.find_element(By.TAG_NAME, "h1").text + driver.title, "auditor: the compliance report opens")
        check(driver.find_elements(By.LINK_TEXT, "Download CSV"), "auditor: CSV download offered")
        shot(driver, "auditor-reports")
    finally:
        driver.quit()


for journey in (holder_journey, support_journey, auditor_reports_journey, operator_journey):
    try:
        journey()
    except Exception as error:  # a journey that breaks is a failure, the next one still runs
        failures.append(f"{journey.__name__}: {error!r}")
        print("FAILED:", journey.__name__, repr(error), file=sys.stderr)

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
