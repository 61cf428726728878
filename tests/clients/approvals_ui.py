"""Drives the approvals page of a running `reins serve` in headless Chromium.

Usage: python3 approvals_ui.py BASE_URL TOKEN

Signs in with the token, finds the pending refund, approves it through the
page, and checks that the page reports the run as completed.
"""

import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, token = sys.argv[1], sys.argv[2]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for flag in [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]:
    opts.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    wait = WebDriverWait(driver, 20)
    driver.get(base + "/ui/approvals")
    # Without a token the API refuses: the page says so.
    wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "401"))
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    driver.find_element(By.ID, "signin").click()
    button = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button.approve")))
    article = driver.find_element(By.CSS_SELECTOR, "article")
    assert "issue_refund" in article.text, article.text
    assert "500" in article.text, article.text
    button.click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "now completed"))
    print("status:", driver.find_element(By.ID, "status").text)
    assert not driver.find_elements(By.CSS_SELECTOR, "button.approve"), "approved item must leave the list"
    print("1 passed, 0 failed")
finally:
    driver.quit()
