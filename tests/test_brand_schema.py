"""brands.json validation: minimal records pass, mistakes are named."""

import json

import pytest

from app.brand_schema import BrandFileError, normalize_key
from app.brand_store import parse_brands
from conftest import REPO

MINIMAL_TECHZONE = {
    "name": "TechZone",
    "description": "ร้านอุปกรณ์เกมมิ่งและไอที",
    "tone": ["ล้ำสมัย", "รวดเร็ว", "เท่"],
    "target_audience": "Gamers 18-35 ปี",
    "core_values": ["Performance First", "Gamer Community"],
}


def parse(data) -> list:
    return parse_brands(json.dumps(data, ensure_ascii=False).encode(), "brands.json").brands


def test_minimal_techzone_record_validates_as_it_stands():
    [brand] = parse({"brands": [MINIMAL_TECHZONE]})
    assert brand.name == "TechZone" and brand.hashtags == [] and brand.products == []


def test_a_bare_product_name_is_a_product_without_a_description():
    record = dict(MINIMAL_TECHZONE, products=["Viper X Mouse", {"name": "Pad", "price": "290"}])
    for data in ({"brands": [record]}, [record]):  # an object, or a bare list of brands
        [brand] = parse(data)
        assert [(p.name, p.description, p.price) for p in brand.products] == [("Viper X Mouse", "", None),
                                                                               ("Pad", "", "290")]
    with pytest.raises(BrandFileError, match=r"brand 'TechZone', field 'products.1.prize'"):
        parse({"brands": [dict(MINIMAL_TECHZONE, products=["Viper X Mouse", {"name": "Pad", "prize": "290"}])]})


def test_the_shipped_file_is_valid_and_rich():
    brands = parse_brands((REPO / "brands" / "brands.json").read_bytes(), "brands.json").brands
    names = {b.name for b in brands}
    assert len(brands) >= 14
    assert {"CoffeeLab", "FitFlow", "GreenLeaf", "PetPals", "SpeedyLoans", "LuxStay", "TechZone"} <= names
    for brand in brands:
        scripts = {"thai" if any("\u0e00" <= c <= "\u0e7f" for c in n) else "latin" for n in brand.all_names}
        assert scripts == {"thai", "latin"}, f"{brand.name} needs Thai and Latin spellings"
        assert brand.hashtags and brand.example_posts and brand.products and brand.words_to_avoid


def test_misspelt_field_names_the_field_and_the_brand():
    record = dict(MINIMAL_TECHZONE, hashtag=["#TechZone"])
    with pytest.raises(BrandFileError) as err:
        parse({"brands": [{"name": "CoffeeLab"}, record]})
    message = str(err.value)
    assert "brands.json" in message and "'TechZone'" in message and "hashtag" in message
    assert "did you mean 'hashtags'" in message


def test_colliding_alias_makes_the_file_invalid():
    data = {"brands": [{"name": "GlowLab", "aliases": ["โกลว์แล็บ"]}, {"name": "Glow Lab X", "aliases": ["  GLOWLAB "]}]}
    with pytest.raises(BrandFileError, match="already used by brand 'GlowLab'"):
        parse(data)


def test_a_brand_in_the_file_twice_is_named_with_both_records():
    data = {"brands": [{"name": "GlowLab"}, {"name": "TechZone"}, {"name": "glowlab", "tone": ["สดใส"]}]}
    with pytest.raises(BrandFileError) as err:
        parse(data)
    assert str(err.value) == (
        "brands.json: brand 'glowlab' is in the file twice (records #1 and #3); merge them into one record"
    )


def test_the_name_keys_made_while_validating_are_what_the_resolver_made_itself():
    """The resolver and the leak index take the keys validation made instead of normalizing
    every name again: the same map the resolver built on its own, name first, then aliases."""

    def resolvers_own(brands):
        keys = {}
        for i, brand in enumerate(brands):
            keys[normalize_key(brand.name)] = (i, "exact", brand.name)
            for alias in brand.aliases:
                keys.setdefault(normalize_key(alias), (i, "alias", alias))
        return keys

    tricky = {"brands": [
        {"name": "GlowLab", "aliases": ["glowlab", "โกลว์แล็บ", "Glow  Lab", "โกลว์แล็บ"]},
        {"name": "\u00e9clair", "aliases": ["ฟิตโก้"]}, {"name": "ฟิตโก", "aliases": [" FITGO "]},
    ]}
    for raw in ((REPO / "brands" / "brands.json").read_bytes(), json.dumps(tricky, ensure_ascii=False).encode()):
        parsed = parse_brands(raw, "brands.json")
        assert parsed.name_keys == resolvers_own(parsed.brands)


def test_collision_uses_nfc():
    decomposed = "e\u0301clair"  # é as e + combining accent
    with pytest.raises(BrandFileError, match="already used"):
        parse({"brands": [{"name": "\u00e9clair"}, {"name": "Other", "aliases": [decomposed]}]})


def test_combining_marks_keep_names_apart():
    brands = parse({"brands": [{"name": "ฟิตโก"}, {"name": "ฟิตโก้"}]})
    assert normalize_key(brands[0].name) != normalize_key(brands[1].name)


@pytest.mark.parametrize(
    "raw,needle",
    [
        (b'{"brands": [', "invalid JSON at line 1"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"brands": []}', "brands"),
        (b'{"brands": [{"description": "x"}]}', "'name'"),
        (b'{"brands": [{"name": "A", "tone": "fun"}]}', "'tone'"),
    ],
)
def test_broken_files_get_a_message_naming_the_problem(raw, needle):
    with pytest.raises(BrandFileError) as err:
        parse_brands(raw, "brands.json")
    assert needle in str(err.value) and str(err.value).startswith("brands.json")


def test_field_and_list_limits_name_the_brand_and_the_field():
    from app.brand_schema import MAX_ITEMS, MAX_TEXT
    from app.brand_store import parse_brands

    long_text = {"brands": [{"name": "Bloated", "description": "ก" * (MAX_TEXT + 1)}]}
    with pytest.raises(BrandFileError) as err:
        parse_brands(json.dumps(long_text).encode(), "brands.json")
    assert "Bloated" in str(err.value) and "description" in str(err.value)
    many = {"brands": [{"name": "Listy", "hashtags": [f"#t{i}" for i in range(MAX_ITEMS + 1)]}]}
    with pytest.raises(BrandFileError) as err:
        parse_brands(json.dumps(many).encode(), "brands.json")
    assert "Listy" in str(err.value) and "hashtags" in str(err.value)
    parse_brands(json.dumps({"brands": [{"name": "Fine", "description": "ก" * MAX_TEXT}]}).encode(), "b.json")
