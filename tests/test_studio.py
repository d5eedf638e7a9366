"""The Studio page in headless Chromium, against `python -m app` on the tiny model.

The tiny model writes random text, so these tests assert structure (text streamed in,
badges rendered, highlights placed, rows counted), never wording. Screenshots go to
STUDIO_SCREENSHOTS (or a folder of the run); their paths are printed (`pytest -s`).
"""

import csv
import io
import shutil
import unicodedata

import pytest

from app.batch import COLUMNS
from browser import CHROMIUM, screenshot_dir, skip_without_browser
from conftest import REPO
from test_server import running_app

KEY = "studio-test-key"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000  # a guard against hangs only: the tiny model answers in about a second


def _brands_copy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-brands")
    shutil.copy(REPO / "brands" / "brands.json", folder / "brands.json")
    return folder / "brands.json"


@pytest.fixture(scope="module")
def studio(tiny_model_dir, tmp_path_factory):
    """(client, base URL) of a server without a key. MAX_BATCH_ITEMS=4: the calendar must
    split its rows to fit, as it must under any server's limit."""
    skip_without_browser()
    with running_app(tiny_model_dir, _brands_copy(tmp_path_factory), max_new_tokens=24, max_batch_items=4) as (
            client, port):
        yield client, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def keyed(tiny_model_dir, tmp_path_factory):
    """(client, base URL) of a server that requires an API key."""
    skip_without_browser()
    with running_app(tiny_model_dir, _brands_copy(tmp_path_factory), max_new_tokens=24, api_key=KEY) as (client, port):
        yield client, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser():
    skip_without_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])  # root, as in CI
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory)


@pytest.fixture
def open_page(browser):
    """open_page(url, viewport): a page in a fresh context (its own storage); fails the test
    on any uncaught script error."""
    contexts, errors = [], []

    def open_(url, viewport=DESKTOP):
        context = browser.new_context(viewport=viewport, accept_downloads=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_selector("body[data-ready]")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], f"script errors on the page: {errors}"


def snap(page, shots, name: str) -> None:
    path = shots / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


def generate(page, base: str, route: str = "/caption", button: str = "#generate-button"):
    """Click a button that writes copy and wait for its verdict on the page; the response it caused."""
    with page.expect_response(lambda r: r.url == base + route) as answered:
        page.click(button)
    page.wait_for_selector("#generate-checks .verdict")
    return answered.value


def pick(page, typed: str, expected: str) -> None:
    """Type into the brand picker key by key, as a person does, and wait for the profile."""
    box = page.locator("#brand-input")
    box.fill("")
    box.press_sequentially(typed, delay=20)
    page.wait_for_function(
        "name => document.getElementById('brand-name')?.textContent.startsWith(name)", arg=expected)


def rows_of(page, selector: str) -> dict:
    """{check name: badge state} of a rendered verdict."""
    return page.eval_on_selector_all(f"{selector} li.check", """rows => Object.fromEntries(rows.map(
        r => [r.dataset.check, r.querySelector('.badge').className.replace('badge', '').trim()]))""")


def option_count(page) -> int:
    return page.eval_on_selector_all("#brand-list option", "options => options.length")


def all_labels(client, **headers) -> int:
    brands = client.get("/brands", headers=headers).json()["brands"]
    return sum(1 + len(b["aliases"]) for b in brands)


def test_root_redirects_and_the_page_loads_everything_from_the_server(studio, open_page):
    client, base = studio
    root = client.get("/", follow_redirects=False)
    assert root.status_code in (302, 307) and root.headers["location"] == "/studio"
    assert client.get("/studio/", follow_redirects=False).headers["location"] == "/studio"  # its links are relative
    assert client.get("/studio").headers["content-type"].startswith("text/html")
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/studio")], "the page is not part of the API"

    requested = []
    page = open_page(base + "/")
    page.on("request", lambda request: requested.append(request.url))
    page.reload()
    page.wait_for_function(f"document.querySelectorAll('#brand-list option').length === {all_labels(client)}")
    assert page.url == base + "/studio"
    assert len(requested) >= 8  # the page, the stylesheet, the modules, /brands
    assert [url for url in requested if not url.startswith(base + "/")] == [], "no CDN, no web fonts"
    assert base + "/brands" in requested


def test_thai_by_default_and_the_english_toggle_is_remembered(studio, open_page):
    _, base = studio
    page = open_page(base + "/studio")
    assert page.get_attribute("html", "lang") == "th"
    assert page.inner_text("#tab-generate") == "สร้างคอนเทนต์"
    page.click("button[data-lang=en]")
    assert page.get_attribute("html", "lang") == "en" and page.inner_text("#tab-generate") == "Generate"
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert page.get_attribute("html", "lang") == "en" and page.inner_text("#tab-check") == "Check my copy"


def test_a_brand_is_found_by_its_thai_alias_with_a_typo(studio, open_page, shots):
    _, base = studio
    page = open_page(base + "/studio")
    pick(page, "เทคโซนน", "TechZone")  # the alias เทคโซน, one letter too many
    profile = page.inner_text("#brand-profile")
    assert "เทคโซน" in page.inner_text("#brand-profile .match")  # the alias the typo was matched to
    for shown in ("ล้ำสมัย", "Gamers 18-35", "#TechZone", "#GamingGear", "ของเลียนแบบ", "Noob"):
        assert shown in profile, shown
    snap(page, shots, "brand-picker")

    # No match: the service's suggestions become buttons that pick the brand.
    page.locator("#brand-input").fill("")
    page.locator("#brand-input").press_sequentially("Cof", delay=20)
    page.click("#brand-suggestions button:has-text('CoffeeLab')")
    page.wait_for_function("document.getElementById('brand-name')?.textContent.startsWith('CoffeeLab')")
    assert "#คอฟฟี่แล็บ" in page.inner_text("#brand-profile")


def test_a_caption_streams_in_with_its_checks(studio, open_page, shots):
    client, base = studio
    page = open_page(base + "/studio")
    pick(page, "คอฟฟี่แล็บ", "CoffeeLab")
    page.fill("textarea[name=context]", "เปิดตัวเมนูใหม่ Cold Brew Honey Yuzu ต้อนรับหน้าร้อน")
    page.select_option("#generate-form select[name=platform]", "instagram")
    response = generate(page, base)
    assert response.request.post_data_json["stream"] is True
    assert response.headers["content-type"].startswith("text/event-stream")

    assert int(page.get_attribute("#generate-text", "data-deltas")) >= 1  # written as it streamed in
    assert page.is_hidden("#adapter-field") and "adapter" not in response.request.post_data_json  # no choice here
    page.click("#copy-button")
    text = page.evaluate("navigator.clipboard.readText()")  # Copy gives the copy exactly as generated
    assert text.strip() and unicodedata.normalize("NFC", text).strip() == page.inner_text("#generate-text").strip()

    # The badges say what the API says of this text.
    checks = client.post("/check", json={"brand": "CoffeeLab", "text": text, "platform": "instagram"}).json()["checks"]
    states = rows_of(page, "#generate-checks")
    assert set(states) == {"brand_mentioned", "hashtags", "words_to_avoid", "other_brand", "platform_limit", "thai_ratio"}
    assert set(states.values()) <= {"pass", "fail", "info"}
    assert states["brand_mentioned"] == ("pass" if checks["brand_mentioned"] else "fail")
    assert states["other_brand"] == ("fail" if checks["other_brands"] else "pass")
    assert page.get_attribute("#generate-checks .verdict", "data-on-brand") == str(checks["on_brand"]).lower()
    meter = page.locator("#generate-checks [role=meter]")
    assert meter.get_attribute("aria-valuemax") == "2200"
    assert meter.get_attribute("aria-valuenow") == str(checks["platform"]["length"])
    snap(page, shots, "generate-caption")

    again = generate(page, base, button="#regenerate-button")
    assert again.ok and again.request.post_data_json["context"].startswith("เปิดตัวเมนูใหม่")

    page.select_option("#attempts", "2")
    with page.expect_response(lambda r: r.url == base + "/caption") as compared:
        page.click("#compare-button")
    page.wait_for_selector("#generate-candidates .candidate")
    assert compared.value.request.post_data_json["attempts"] == 2
    assert "stream" not in compared.value.request.post_data_json
    assert page.locator("#generate-candidates .candidate").count() == 2
    assert page.locator("#generate-candidates .candidate.chosen").count() == 1
    snap(page, shots, "generate-compare")


def test_a_brief_and_an_error_message(studio, open_page):
    _, base = studio
    page = open_page(base + "/studio")
    page.click("#generate-button")  # no brand yet: said on the page, nothing sent
    assert page.is_visible("#generate-error")
    pick(page, "GreenLeaf", "GreenLeaf")
    page.click("button[data-task=brief]")
    page.fill("fieldset[data-task=brief] textarea[name=objectives]", "ให้ความรู้\nสร้างความเชื่อมั่น")
    answered = generate(page, base, "/brief")
    assert answered.request.post_data_json["objectives"] == ["ให้ความรู้", "สร้างความเชื่อมั่น"]

    # The server's own error message reaches the user (here a 422 for an emoji-only occasion).
    page.click("button[data-task=caption]")
    page.fill("fieldset[data-task=caption] textarea[name=context]", "🎉🎉")
    page.click("#generate-button")
    page.wait_for_selector("#generate-error:not([hidden])")
    assert "context" in page.inner_text("#generate-error")


def test_pasted_copy_naming_another_brand_is_highlighted(studio, open_page, shots):
    _, base = studio
    page = open_page(base + "/studio")
    pick(page, "TechZone", "TechZone")
    page.click("#tab-check")
    page.fill("#check-form textarea", "☕ เริ่มเช้าใหม่กับ CoffeeLab <b>ของเลียนแบบ</b> #TechZone")
    page.select_option("#check-form select[name=platform]", "x")
    with page.expect_response(lambda r: r.url == base + "/check"):
        page.click("#check-button")
    page.wait_for_selector("#check-checks .verdict")

    assert page.inner_text("#check-text mark.hl-leak") == "CoffeeLab"
    assert page.get_attribute("#check-text mark.hl-leak", "title") == "CoffeeLab"
    assert page.inner_text("#check-text mark.hl-avoid") == "ของเลียนแบบ"
    assert page.locator("#check-text b").count() == 0, "pasted text is shown as text, never as markup"
    assert "<b>" in page.inner_text("#check-text")
    states = rows_of(page, "#check-checks")
    assert states["other_brand"] == "fail" and states["words_to_avoid"] == "fail"
    assert states["brand_mentioned"] == "pass" and states["platform_limit"] == "pass"
    assert page.get_attribute("#check-checks .verdict", "data-on-brand") == "false"
    assert "CoffeeLab" in page.inner_text("#check-checks li[data-check=other_brand]")
    snap(page, shots, "check-leak")

    page.click("button[data-lang=en]")  # what is shown is re-rendered in English
    assert page.inner_text("#check-checks li[data-check=other_brand] .badge") == "fail"
    assert page.inner_text("#check-text mark.hl-leak") == "CoffeeLab"
    snap(page, shots, "check-leak-english")


def test_the_page_asks_for_the_api_key_and_sends_it(keyed, open_page, shots):
    client, base = keyed
    page = open_page(base + "/studio")  # the page and its modules load without a key
    page.wait_for_selector("#key-dialog[open]")
    assert option_count(page) == 0
    snap(page, shots, "api-key-prompt")

    page.fill("#key-input", "not-the-key")
    page.click("#key-dialog button[value=ok]")
    page.wait_for_selector("#key-wrong:not([hidden])")  # refused: asked again, saying so
    assert page.is_visible("#key-dialog")

    with page.expect_request(lambda r: r.url == base + "/brands") as sent:
        page.fill("#key-input", KEY)
        page.click("#key-dialog button[value=ok]")
    assert sent.value.headers["authorization"] == f"Bearer {KEY}"
    page.wait_for_function(f"document.querySelectorAll('#brand-list option').length === "
                           f"{all_labels(client, authorization=f'Bearer {KEY}')}")
    assert not page.is_visible("#key-dialog")
    assert page.evaluate("sessionStorage.getItem('ai-director-api-key')") == KEY
    pick(page, "โกลว์แล็บ", "GlowLab")  # later requests carry the key without asking

    page.reload()  # the same tab keeps the key for its session
    page.wait_for_selector("body[data-ready]")
    page.wait_for_function("document.querySelectorAll('#brand-list option').length > 0")
    assert not page.is_visible("#key-dialog")


def test_a_calendar_round_trip(studio, open_page, shots, tmp_path):
    client, base = studio
    sample = client.get("/studio/calendar-example.csv")
    assert sample.status_code == 200
    calendar = tmp_path / "april.csv"  # the sample a marketer downloads, plus a brand nobody serves
    calendar.write_bytes(sample.content.rstrip(b"\r\n") + "\r\n2026-04-20,Zzyzx Unknown,caption,สงกรานต์,,,line,,\r\n".encode())
    expected = list(csv.DictReader(io.StringIO(calendar.read_text("utf-8-sig"))))

    page = open_page(base + "/studio")
    page.click("#tab-calendar")
    batches = []
    page.on("response", lambda r: r.url == base + "/batch" and batches.append(r.status))
    page.set_input_files("#calendar-file", calendar)
    page.wait_for_selector("#calendar-run:not([disabled])")  # the file is read
    assert str(len(expected)) in page.inner_text("#calendar-summary")
    page.click("#calendar-run")
    page.wait_for_function(f"document.getElementById('calendar-progress').value === {len(expected)}")
    page.wait_for_selector("#calendar-download:not([disabled])")

    rows = page.locator("#calendar-table tbody tr")
    assert rows.count() == len(expected)
    assert page.locator("#calendar-table tbody tr[data-on-brand] .badge").count() == len(expected) - 1
    assert page.locator("#calendar-table tbody tr[data-error=brand_not_found]").count() == 1
    assert batches.count(200) >= 2, f"sent in chunks that fit the server's limit: {batches}"
    snap(page, shots, "calendar")

    with page.expect_download() as downloaded:
        page.click("#calendar-download")
    path = tmp_path / downloaded.value.suggested_filename
    downloaded.value.save_as(path)
    assert path.name == "april-results.csv"
    raw = path.read_bytes()
    assert raw.startswith("\ufeff".encode())  # as the server's CSV: Excel then reads the Thai
    out = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert list(out[0]) == ["date", *COLUMNS]
    assert len(out) == len(expected)
    assert [r["date"] for r in out] == [r["date"] for r in expected]
    assert [r["index"] for r in out] == [str(i) for i in range(len(expected))]
    assert [r["error_code"] for r in out] == [""] * (len(expected) - 1) + ["brand_not_found"]
    assert all(r["text"] and r["on_brand"] in ("true", "false") for r in out[:-1])
    assert out[2]["input"] == "เพิ่มยอดสั่งกลับบ้านช่วงสงกรานต์; ให้คนรู้จักแกงเขียวหวานไก่บ้านสูตรดั้งเดิม"


def test_a_malformed_calendar_names_its_row(studio, open_page, tmp_path):
    _, base = studio
    bad = tmp_path / "bad.csv"
    bad.write_text("brand,task,context\nCoffeeLab,caption,เปิดร้านใหม่\nCoffeeLab,tweet,เปิดร้านใหม่\n", "utf-8")
    page = open_page(base + "/studio")
    page.click("#tab-calendar")
    page.set_input_files("#calendar-file", bad)
    page.wait_for_selector("#calendar-error:not([hidden])")
    assert "3" in page.inner_text("#calendar-error") and "tweet" in page.inner_text("#calendar-error")
    assert page.is_disabled("#calendar-run")


def test_usable_at_phone_width(studio, open_page, shots):
    _, base = studio
    page = open_page(base + "/studio", viewport=PHONE)
    pick(page, "ฟิตโฟลว์", "FitFlow")
    page.fill("textarea[name=context]", "ชวนขยับร่างกายรับสงกรานต์ " * 3)
    page.click("#generate-button")
    page.wait_for_selector("#generate-checks .verdict")
    for tab in ("generate", "check", "calendar"):
        page.click(f"#tab-{tab}")
        overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], f"{tab}: the page scrolls sideways ({overflow})"
    page.click("#tab-generate")
    snap(page, shots, "phone")


def test_a_style_adapter_is_picked_by_name(tiny_model_dir, tmp_path_factory, open_page, shots):
    """A server with a named adapter (one style per agency) offers it; the pick is sent as `adapter`."""
    from training.tiny_model import build_tiny_adapter

    skip_without_browser()
    adapter = build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("studio-adapters") / "agency-a", seed=1)
    with running_app(tiny_model_dir, _brands_copy(tmp_path_factory), max_new_tokens=24,
                     adapters=f"agency-a={adapter}") as (_, port):
        base = f"http://127.0.0.1:{port}"
        page = open_page(base + "/studio")
        page.wait_for_selector("#adapter-field:not([hidden])")
        options = page.eval_on_selector_all("#adapter-select option", "os => os.map(o => o.value)")
        assert options == ["", "agency-a", "none"]  # the default, the named one, the base model alone
        pick(page, "TechZone", "TechZone")
        page.fill("textarea[name=context]", "เปิดตัวเมาส์เกมมิ่ง")
        page.select_option("#adapter-select", "agency-a")
        assert generate(page, base).request.post_data_json["adapter"] == "agency-a"
        snap(page, shots, "generate-adapter")
