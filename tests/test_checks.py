"""On-brand checks and platform limits on real Thai captions (no model needed)."""

import pytest

from app.brand_schema import Brand
from app.checks import CheckReport, LeakIndex, check_text
from app.platforms import LIMITS, PLATFORMS, check_platform, platform_length

TECHZONE = Brand(
    name="TechZone",
    aliases=["เทคโซน", "Tech Zone"],
    hashtags=["#TechZone", "#เกมมิ่ง"],
    emoji=["🎮"],
    words_to_avoid=["อนุมัติ 100%", "Cheapest"],
)
COFFEELAB = Brand(name="CoffeeLab", aliases=["คอฟฟี่แล็บ"], hashtags=["#CoffeeLab", "#กาแฟดริป"], emoji=["☕"])
GREENLEAF = Brand(name="GreenLeaf", aliases=["กรีนลีฟ"], hashtags=["#ผักออร์แกนิก"])
FITGO = Brand(name="FitGo", aliases=["ฟิตโก"], hashtags=["#ฟิตโกพาฟิต"])
PETPAL = Brand(name="PetPal", aliases=["เพ็ทพาล"], hashtags=["#ทาสหมาทาสแมว"])
LABPRO = Brand(name="LabPro", aliases=["Lab"])  # a short Latin alias that must not fire inside words
DRIPHOUSE = Brand(name="DripHouse", aliases=["ดริปเฮาส์"], hashtags=["#กาแฟดริป"])  # shares a tag with CoffeeLab
OH = Brand(name="OhShop", aliases=["โอ"])  # 2-character Thai alias: too short to count as a leak
SOLO = Brand(name="Solo")  # every optional field empty

ALL = [TECHZONE, COFFEELAB, GREENLEAF, FITGO, PETPAL, LABPRO, DRIPHOUSE, OH, SOLO]


@pytest.fixture(scope="module")
def leaks() -> LeakIndex:
    return LeakIndex(ALL)


CLEAN = "คีย์บอร์ดเกมมิ่งรุ่นใหม่จาก TechZone 🎮 สวิตช์เงียบ ไฟ RGB สวยทุกมุม #TechZone #เกมมิ่ง"
LEAKY = "เกมมิ่งเกียร์ใหม่จาก TechZone 🎮 เล่นยาวทั้งคืน ☕ พักจิบกาแฟกับ CoffeeLab #TechZone #CoffeeLab"


def test_leak_of_other_brand_is_flagged_and_named(leaks):
    report = check_text(LEAKY, TECHZONE, platform="instagram", leaks=leaks)
    assert not report.on_brand
    assert report.other_brands == [{"brand": "CoffeeLab", "found": ["CoffeeLab", "#CoffeeLab"]}]
    assert report.reasons == ["mentions another brand: CoffeeLab (CoffeeLab, #CoffeeLab)"]
    assert report.brand_mentioned
    assert report.hashtags_brand == ["#TechZone"]
    assert report.hashtags_new == ["#CoffeeLab"]


def test_clean_caption_passes(leaks):
    report = check_text(CLEAN, TECHZONE, platform="instagram", leaks=leaks)
    assert report.on_brand, report.reasons
    assert report.reasons == []
    assert report.score == 1.0
    assert report.other_brands == []
    assert report.hashtags_brand == ["#TechZone", "#เกมมิ่ง"]
    assert report.platform["within_limit"]
    assert 0.25 <= report.thai_ratio <= 1
    # the clean caption outranks the leaky one when picking among candidates
    assert report.score > check_text(LEAKY, TECHZONE, platform="instagram", leaks=leaks).score
    assert isinstance(CheckReport.model_validate_json(report.model_dump_json()), CheckReport)


def test_leaks_through_thai_alias_and_signature_hashtag(leaks):
    text = "TechZone ชวนนั่งเล่นเกมที่คอฟฟี่แล็บ #กาแฟดริป #เกมมิ่ง"
    found = leaks.find(text, TECHZONE)
    assert {"brand": "CoffeeLab", "found": ["คอฟฟี่แล็บ", "#กาแฟดริป"]} in found
    # #กาแฟดริป is also DripHouse's signature tag: it leaks that brand too
    assert {"brand": "DripHouse", "found": ["#กาแฟดริป"]} in found
    assert "GreenLeaf" in check_text("TechZone x กรีนลีฟ", TECHZONE, leaks=leaks).reasons[0]


def test_name_inside_a_hashtag_leaks(leaks):
    assert leaks.find("เทคโซนรักษ์โลก #GreenLeaf", TECHZONE) == [{"brand": "GreenLeaf", "found": ["GreenLeaf"]}]


def test_term_shared_with_checked_brand_is_not_a_leak(leaks):
    report = check_text("ดริปเฮาส์ชวนชิม #กาแฟดริป", DRIPHOUSE, leaks=leaks)
    assert report.other_brands == []
    assert report.on_brand, report.reasons
    assert report.hashtags_brand == ["#กาแฟดริป"]


def test_latin_alias_needs_word_boundaries(leaks):
    text = "CoffeeLab ชวนชิมกาแฟดริป Labs และ Labrador ไม่ใช่แบรนด์ #CoffeeLab"
    assert leaks.find(text, COFFEELAB) == []
    assert check_text(text, COFFEELAB, leaks=leaks).on_brand
    # the same alias standing alone, or touching Thai letters, is a leak
    assert leaks.find("CoffeeLab ชวนไปที่ Lab ของเรา", COFFEELAB)[0]["brand"] == "LabPro"
    assert leaks.find("CoffeeLab ชวนไปLabของเรา", COFFEELAB)[0]["brand"] == "LabPro"


def test_short_thai_alias_is_not_a_leak(leaks):
    assert leaks.find("TechZone โอกาสดีแบบนี้ต้องรีบ", TECHZONE) == []


def test_thai_alias_counts_as_mention():
    report = check_text("เทคโซนจัดเต็มเกมมิ่งเกียร์ลดทั้งร้าน", TECHZONE)
    assert report.brand_mentioned
    assert report.on_brand, report.reasons
    # a Latin name glued to Thai text (no spaces in Thai) and inside its hashtag also count
    assert check_text("ลองTechZoneวันนี้", TECHZONE).brand_mentioned
    assert check_text("คีย์บอร์ดใหม่มาแล้ว #techzone", TECHZONE).brand_mentioned
    assert not check_text("คีย์บอร์ดใหม่มาแล้ว TechZones", TECHZONE).brand_mentioned


def test_nfc_and_case_are_ignored():
    cafe = Brand(name="Café Noir")
    assert check_text("CAFE\u0301 NOIR เปิดใหม่", cafe).brand_mentioned  # decomposed é, upper case
    assert check_text("ร้าน Tech\n  Zone สาขาใหม่", TECHZONE).brand_mentioned  # spaces collapsed


def test_word_to_avoid_is_found():
    report = check_text("TechZone การันตี อนุมัติ 100% ราคาพิเศษ CHEAPEST", TECHZONE)
    assert report.words_to_avoid_found == ["อนุมัติ 100%", "Cheapest"]
    assert report.reasons == ["uses a word to avoid: อนุมัติ 100%, Cheapest"]
    assert not report.on_brand


def test_tone_mark_makes_a_different_word(leaks):
    # "ฟิตโก้" starts with "ฟิตโก" but the tone mark makes it another word
    assert not check_text("ฟิตโก้พาวิ่งตอนเช้า", FITGO).brand_mentioned
    assert check_text("ฟิตโกพาวิ่งตอนเช้า", FITGO).brand_mentioned
    assert leaks.find("TechZone ชวนฟิตโก้มาเล่นเกม", TECHZONE) == []
    assert leaks.find("TechZone ชวนฟิตโกมาเล่นเกม", TECHZONE) == [{"brand": "FitGo", "found": ["ฟิตโก"]}]


def test_hashtags_with_thai_marks_extracted_whole_and_classified():
    text = "เพ็ทพาลชวนเที่ยว #ทาสหมาทาสแมว #กาแฟดริป #เที่ยวไทย"
    report = check_text(text, PETPAL)
    assert report.hashtags_brand == ["#ทาสหมาทาสแมว"]
    assert report.hashtags_new == ["#กาแฟดริป", "#เที่ยวไทย"]  # ดริป and เที่ยว keep their marks
    # a hashtag that only starts with the brand's one is new, not the brand's
    report = check_text("ฟิตโกชวนวิ่ง #ฟิตโกพาฟิต #ฟิตโกพาฟิตต่อ", FITGO)
    assert report.hashtags_brand == ["#ฟิตโกพาฟิต"]
    assert report.hashtags_new == ["#ฟิตโกพาฟิตต่อ"]


def test_x_weighted_length():
    assert platform_length("สวัสดี", "x") == 6  # combining marks count 1 each
    assert platform_length("🎮", "x") == 2
    assert platform_length("https://example.com/" + "a" * 100, "x") == 23
    assert platform_length("สวัสดี 🎮 https://techzone.example/promo/2025", "x") == 6 + 1 + 2 + 1 + 23
    assert check_platform("ก" * 278 + "🎮", "x")["within_limit"]  # 280
    over = "TechZone " + "ก" * 270 + "🎮"  # 9 + 270 + 2 = 281
    assert platform_length(over, "x") == 281
    report = check_text(over, TECHZONE, platform="x")
    assert not report.on_brand
    assert report.reasons == ["exceeds x limit: 281/280"]


def test_line_counts_utf16_units():
    assert platform_length("🎮", "line") == 2
    assert platform_length("สวัสดี🎮", "line") == 8
    assert platform_length("🎮", "instagram") == 1
    assert not check_platform("ก" * 4999 + "🎮", "line")["within_limit"]  # 5001 units
    assert check_platform("ก" * 4998 + "🎮", "line")["within_limit"]


def test_instagram_hashtag_cap():
    tags = [f"#แท็ก{i}" for i in range(31)]
    report = check_text("TechZone ของใหม่ " + " ".join(tags), TECHZONE, platform="instagram")
    assert report.platform["hashtag_count"] == 31 and report.platform["hashtag_limit"] == 30
    assert not report.platform["within_limit"]
    assert report.reasons == ["exceeds instagram hashtag limit: 31/30"]
    assert check_text("TechZone ของใหม่ " + " ".join(tags[:30]), TECHZONE, platform="instagram").on_brand


def test_platform_table():
    assert PLATFORMS == ("instagram", "facebook", "tiktok", "x", "line")
    assert set(LIMITS) == set(PLATFORMS)
    assert check_platform("สวัสดี", "tiktok") == {
        "name": "tiktok", "length": 6, "limit": 2200, "hashtag_count": 0, "hashtag_limit": None, "within_limit": True,
    }
    with pytest.raises(ValueError, match="unknown platform"):
        platform_length("hi", "myspace")


def test_brand_with_empty_optional_fields(leaks):
    report = check_text("Solo ร้านใหม่เปิดแล้ว #เปิดร้าน", SOLO, platform="facebook", leaks=leaks)
    assert report.on_brand, report.reasons
    assert report.hashtags_brand == [] and report.hashtags_new == ["#เปิดร้าน"]
    assert report.words_to_avoid_found == []


def test_empty_emoji_only_and_english_only_text(leaks):
    for empty in ("", "   \n"):
        report = check_text(empty, TECHZONE, leaks=leaks)
        assert (report.on_brand, report.reasons, report.score) == (False, ["empty text"], 0.0)
    report = check_text("☕🎮✨", TECHZONE, platform="x", leaks=leaks)
    assert report.thai_ratio == 0.0
    assert report.reasons == ["does not mention the brand name or any alias", "Thai ratio 0 below 0.25"]
    report = check_text("TechZone new keyboard drop", TECHZONE)
    assert report.reasons == ["Thai ratio 0 below 0.25"]


def test_100kb_text(leaks):
    text = CLEAN * 1000
    assert len(text.encode()) > 100_000
    report = check_text(text, TECHZONE, platform="instagram", leaks=leaks)
    assert report.brand_mentioned and report.other_brands == []
    assert not report.platform["within_limit"]
    assert report.reasons[0].startswith("exceeds instagram limit: ")


def test_term_search_finds_what_a_scan_of_every_position_finds(leaks):
    """findall looks only where a term's first character is; a scan trying every position, as
    it once did, finds the same terms in texts made of brand names, their pieces and filler."""
    import random

    from app.brand_schema import normalize_key

    terms = leaks._terms
    words = [normalize_key(n) for b in ALL for n in (*b.all_names, *b.hashtags)]
    words += [w[: len(w) // 2] for w in words] + ["กาแฟ", "ลด", " ", "x", "้", "#", "lab", "labs", "ๆ", "☕", "1"]
    rng = random.Random(7)

    def scan(s):
        found, i = [], 0
        while i < len(s):
            term = terms._at(s, i)
            found += [term] if term else []
            i += len(term) if term else 1
        return found

    for _ in range(3000):
        text = "".join(rng.choice(words) + rng.choice(["", " ", "", "ๆ"]) for _ in range(rng.randint(1, 8)))
        assert terms.findall(text) == scan(text), text
