"""The BSN 11-test, checked against numbers computed by hand."""

from __future__ import annotations

import pytest

from fhir_gateway.validation.bsn import is_valid_bsn


# 999911120: 9*9+8*9+7*9+6*9+5*1+4*1+3*1+2*2-0 = 286 = 26*11
# 999999151: 9*9+8*9+7*9+6*9+5*9+4*9+3*1+2*5-1 = 363 = 33*11
# 111222333: 9+8+7+12+10+8+9+6-3 = 66 = 6*11
# 123456782: 9+16+21+24+25+24+21+16-2 = 154 = 14*11
@pytest.mark.parametrize("value", ["999911120", "999999151", "111222333", "123456782"])
def test_valid_bsn(value: str) -> None:
    assert is_valid_bsn(value)


@pytest.mark.parametrize(
    "value",
    [
        "999911121",  # check digit off by one
        "123456789",  # 9+16+21+24+25+24+21+16-9 = 147, not a multiple of 11
        "000000000",  # passes the arithmetic but is not a number anyone has
        "99991112",  # 8 digits
        "9999111200",  # 10 digits
        "99991112a",
        "9999 1112",
        "",
        "٩٩٩٩١١١٢٠",  # Arabic-Indic digits: str.isdigit() is True, but not a BSN
    ],
)
def test_invalid_bsn(value: str) -> None:
    assert not is_valid_bsn(value)


def test_non_string_is_invalid() -> None:
    assert not is_valid_bsn(999911120)  # type: ignore[arg-type]
