"""The shim serves DescribeSpotPriceHistory and GetProducts from a price trace, as botocore parses them."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from emulator_fixtures import client, price_shim

from spot_optimizer.emulator.market import (
    SYNTHETIC_TYPES,
    load_ondemand,
    load_trace,
    synthetic_market,
    synthetic_ondemand,
)
from spot_optimizer.emulator.shim import ShimServer

REGION = "eu-west-1"
AZS = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]


@pytest.fixture(scope="module")
def synthetic() -> Iterator[ShimServer]:
    start = datetime.now(UTC)
    shim = price_shim(synthetic_market(REGION, AZS, seed=7, start=start), synthetic_ondemand(REGION), 60.0, start)
    yield shim
    shim.stop()


def _all_pages(ec2, **kwargs) -> list[dict]:  # noqa: ANN001
    out = []
    for page in ec2.get_paginator("describe_spot_price_history").paginate(**kwargs):
        out.extend(page["SpotPriceHistory"])
    return out


def test_spot_price_history_filters_by_type_and_az(synthetic: ShimServer) -> None:
    ec2 = client("ec2", synthetic.url)
    answer = ec2.describe_spot_price_history(
        InstanceTypes=["m5.large", "c5.large"],
        Filters=[{"Name": "availability-zone", "Values": ["eu-west-1b"]}],
        StartTime=datetime.now(UTC) - timedelta(hours=2),
        MaxResults=1000,
    )["SpotPriceHistory"]
    assert answer
    assert {r["InstanceType"] for r in answer} == {"m5.large", "c5.large"}
    assert {r["AvailabilityZone"] for r in answer} == {"eu-west-1b"}
    stamps = [r["Timestamp"] for r in answer]
    assert stamps == sorted(stamps, reverse=True)  # newest first, as EC2 answers
    assert max(stamps) <= datetime.now(UTC)  # nothing from the future of the trace
    od = SYNTHETIC_TYPES["m5.large"][0]
    assert all(0.0 < float(r["SpotPrice"]) < od for r in answer if r["InstanceType"] == "m5.large")


def test_spot_price_history_includes_the_price_in_effect_at_start(synthetic: ShimServer) -> None:
    ec2 = client("ec2", synthetic.url)
    start = datetime.now(UTC) - timedelta(seconds=30)
    answer = ec2.describe_spot_price_history(
        InstanceTypes=["r5.large"], AvailabilityZone="eu-west-1a", StartTime=start, MaxResults=100
    )["SpotPriceHistory"]
    # 30 s at speed 60 is 30 trace minutes: fewer than the 1-8 h between moves, so one price in effect
    assert len(answer) >= 1
    assert answer[-1]["Timestamp"] <= start


def test_spot_price_history_pagination_returns_every_record_once(synthetic: ShimServer) -> None:
    ec2 = client("ec2", synthetic.url)
    window = {"StartTime": datetime.now(UTC) - timedelta(hours=1), "EndTime": datetime.now(UTC)}
    whole = ec2.describe_spot_price_history(InstanceTypes=["m5.large", "t3.medium"], MaxResults=1000, **window)
    assert "NextToken" not in whole or not whole["NextToken"]
    paged = _all_pages(ec2, InstanceTypes=["m5.large", "t3.medium"], PaginationConfig={"PageSize": 5}, **window)
    assert len(whole["SpotPriceHistory"]) > 10  # enough for several pages
    assert paged == whole["SpotPriceHistory"]


def test_spot_price_history_rejects_a_bad_token(synthetic: ShimServer) -> None:
    ec2 = client("ec2", synthetic.url)
    with pytest.raises(ClientError) as err:
        ec2.describe_spot_price_history(NextToken="not-a-token", MaxResults=5)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_set_price_is_served_at_once(synthetic: ShimServer) -> None:
    at = synthetic.clock.trace_time().timestamp()
    synthetic.market.set_price("c5.xlarge", "eu-west-1c", 0.0123, at)
    ec2 = client("ec2", synthetic.url)
    newest = ec2.describe_spot_price_history(InstanceTypes=["c5.xlarge"], AvailabilityZone="eu-west-1c", MaxResults=5)
    assert newest["SpotPriceHistory"][0]["SpotPrice"] == "0.012300"


def _products(pricing, filters: list[dict], page_size: int = 100) -> list[dict]:  # noqa: ANN001
    out = []
    pages = pricing.get_paginator("get_products").paginate(
        ServiceCode="AmazonEC2", Filters=filters, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        out.extend(json.loads(doc) for doc in page["PriceList"])
    return out


def _od_price(doc: dict) -> float:
    (term,) = doc["terms"]["OnDemand"].values()
    (dim,) = term["priceDimensions"].values()
    assert dim["unit"] == "Hrs"
    return float(dim["pricePerUnit"]["USD"])


LINUX_FILTERS = [
    {"Type": "TERM_MATCH", "Field": "regionCode", "Value": REGION},
    {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
    {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
    {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
    {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
    {"Type": "TERM_MATCH", "Field": "marketoption", "Value": "OnDemand"},
    {"Type": "TERM_MATCH", "Field": "licenseModel", "Value": "No License required"},
]


def test_get_products_answers_the_price_list_format(synthetic: ShimServer) -> None:
    pricing = client("pricing", synthetic.url, region="us-east-1")
    docs = _products(pricing, [{"Type": "TERM_MATCH", "Field": "instanceType", "Value": "m5.large"}, *LINUX_FILTERS])
    assert len(docs) == 1
    assert docs[0]["product"]["attributes"]["instanceType"] == "m5.large"
    assert docs[0]["product"]["productFamily"] == "Compute Instance"
    assert _od_price(docs[0]) == pytest.approx(SYNTHETIC_TYPES["m5.large"][0])
    none = _products(pricing, [{"Type": "TERM_MATCH", "Field": "instanceType", "Value": "x9.nothing"}])
    assert none == []


def test_get_products_pagination(synthetic: ShimServer) -> None:
    pricing = client("pricing", synthetic.url, region="us-east-1")
    docs = _products(pricing, LINUX_FILTERS, page_size=4)
    assert sorted(d["product"]["attributes"]["instanceType"] for d in docs) == sorted(SYNTHETIC_TYPES)


# --- the real trace ---------------------------------------------------------------------------------
def _price_series(path: Path, itype: str, az: str) -> list[tuple[datetime, float]]:
    with gzip.open(path, "rt") as fh:
        rows = [
            (datetime.fromisoformat(r["timestamp"]), float(r["spot_price"]))
            for r in csv.DictReader(fh)
            if r["instance_type"] == itype and r["availability_zone"] == az
        ]
    return sorted(rows)


def _price_at(series: list[tuple[datetime, float]], at: datetime) -> float:
    return [price for ts, price in series if ts <= at][-1]


def _expected_ondemand(path: Path, itype: str) -> float:
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if row["region"] == REGION and row["instance_type"] == itype:
                return float(row["ondemand_usd_per_hour"])
    raise AssertionError(f"{itype} not in {path}")


@pytest.mark.shared_data
def test_real_trace_and_ondemand_file(shared_data: Path) -> None:
    trace = shared_data / "spot-prices" / "eu-west-1_linux_2021-12-13_2022-06-07.csv.gz"
    od_file = shared_data / "ondemand" / "ondemand_linux_32regions_2025-04.csv"
    market = load_trace(trace, REGION, ["m5.large", "c5.large"])
    trace_start = datetime(2022, 3, 1, tzinfo=UTC)
    shim = price_shim(market, load_ondemand(od_file, REGION), 3600.0, trace_start)
    try:
        ec2 = client("ec2", shim.url)
        before = shim.clock.trace_time()
        newest = ec2.describe_spot_price_history(
            InstanceTypes=["m5.large"], AvailabilityZone="eu-west-1a", MaxResults=5
        )["SpotPriceHistory"][0]
        after = shim.clock.trace_time()
        series = _price_series(trace, "m5.large", "eu-west-1a")
        # the trace moves 3600x faster than the call: the price served is the one in effect during it
        assert float(newest["SpotPrice"]) in {_price_at(series, before), _price_at(series, after)}
        served_trace_time = shim.clock.trace_time(newest["Timestamp"].timestamp())
        assert served_trace_time <= after + timedelta(seconds=1)
        # its timestamp maps back to the trace record's own time (milliseconds of wall time = 3.6 s of trace)
        gap = min(abs((ts - served_trace_time).total_seconds()) for ts, p in series if p == float(newest["SpotPrice"]))
        assert gap < 10
        pricing = client("pricing", shim.url, region="us-east-1")
        docs = _products(
            pricing, [{"Type": "TERM_MATCH", "Field": "instanceType", "Value": "m5.large"}, *LINUX_FILTERS]
        )
        assert _od_price(docs[0]) == _expected_ondemand(od_file, "m5.large")
    finally:
        shim.stop()
