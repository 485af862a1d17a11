"""Spot prices (moto), the price-list parser, the on-demand cache and the labelled estimate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from spot_optimizer.aws.pricing import PriceCollector, ondemand_filters, parse_price_list
from spot_optimizer.aws.session import AwsSettings, ec2_client, pricing_client

REGION = "eu-west-1"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_PRICING"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def dead_pricing() -> Any:
    """A Pricing client whose endpoint refuses connections: the API is down."""
    return pricing_client(AwsSettings(region=REGION, endpoint_url="http://127.0.0.1:9", max_attempts=1,
                                      connect_timeout_s=0.2))


def price_list_item(usd: str, sku: str = "SKU1") -> str:
    return json.dumps({
        "product": {"sku": sku, "productFamily": "Compute Instance",
                    "attributes": {"instanceType": "m5.large", "regionCode": REGION, "operatingSystem": "Linux"}},
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {"priceDimensions": {
            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {"USD": usd}}}}}},
        "publicationDate": "2025-04-04T00:00:00Z",
    })


def test_spot_prices_for_all_types_and_azs_in_one_paginated_call(aws: None) -> None:
    ec2 = ec2_client(AwsSettings(region=REGION))
    calls: list[dict[str, Any]] = []
    ec2.meta.events.register("provide-client-params.ec2.DescribeSpotPriceHistory",
                             lambda params, **_: calls.append(dict(params)))
    collector = PriceCollector(ec2, dead_pricing(), REGION)
    prices = collector.spot_prices(["m5.large", "m5a.large", "c5.large"])
    assert {(p.instance_type, p.az) for p in prices} == {
        (t, f"{REGION}{z}") for t in ("m5.large", "m5a.large", "c5.large") for z in "abc"}
    assert len(calls) == 1  # one request for every type and AZ (one page here)
    assert calls[0]["InstanceTypes"] == ["c5.large", "m5.large", "m5a.large"]
    assert calls[0]["ProductDescriptions"] == ["Linux/UNIX"] and "StartTime" in calls[0]


def test_latest_price_per_pool_wins() -> None:
    from spot_optimizer.aws.pricing import latest_per_pool

    t0 = datetime(2022, 1, 1, tzinfo=UTC)
    records = [
        {"InstanceType": "m5.large", "AvailabilityZone": "a", "SpotPrice": "0.030", "Timestamp": t0},
        {"InstanceType": "m5.large", "AvailabilityZone": "a", "SpotPrice": "0.035", "Timestamp": t0 + timedelta(1)},
        {"InstanceType": "m5.large", "AvailabilityZone": "b", "SpotPrice": "0.040", "Timestamp": t0},
    ]
    latest = latest_per_pool(records)
    assert latest[("m5.large", "a")].price == 0.035 and latest[("m5.large", "b")].price == 0.040


def test_price_list_parser_reads_hourly_usd() -> None:
    assert parse_price_list([price_list_item("0.1070000000")]) == pytest.approx(0.107)
    # zero-priced and non-hourly dimensions are not the on-demand rate
    assert parse_price_list([price_list_item("0.0000000000"), price_list_item("0.1070000000", "SKU2")]) == 0.107
    assert parse_price_list([]) is None


def test_ondemand_filters_select_shared_linux_without_software() -> None:
    filters = {f["Field"]: f["Value"] for f in ondemand_filters("m5.large", REGION)}
    assert filters == {"instanceType": "m5.large", "regionCode": REGION, "operatingSystem": "Linux",
                       "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
                       "licenseModel": "No License required", "marketoption": "OnDemand"}


def test_ondemand_cache_is_persisted_and_used_across_restarts(aws: None, tmp_path: Path) -> None:
    cache = tmp_path / "prices_cache.json"
    now = datetime.now(UTC)
    cache.write_text(json.dumps({"version": 1, "ondemand": {
        f"{REGION}/m5.large": {"price": 0.107, "fetched_at": (now - timedelta(hours=1)).isoformat()}}}))
    collector = PriceCollector(ec2_client(AwsSettings(region=REGION)), dead_pricing(), REGION, cache_path=cache)
    price = collector.ondemand_price("m5.large")
    assert price is not None and price.price == 0.107 and price.source == "cache" and not price.estimated
    assert collector.pricing_api_calls == 0


def test_expired_cache_is_refetched_and_failure_falls_back_to_labelled_estimate(aws: None, tmp_path: Path) -> None:
    cache = tmp_path / "prices_cache.json"
    old = datetime.now(UTC) - timedelta(days=3)
    cache.write_text(json.dumps({"version": 1, "ondemand": {
        f"{REGION}/m5.large": {"price": 0.107, "fetched_at": old.isoformat()}}}))
    collector = PriceCollector(ec2_client(AwsSettings(region=REGION)), dead_pricing(), REGION, cache_path=cache)
    price = collector.ondemand_price("m5.large", spot_hint=0.03)
    assert collector.pricing_api_calls == 1
    assert price is not None and price.estimated and price.source == "estimate-from-spot"
    assert price.price == pytest.approx(0.1)
    assert collector.ondemand_price("m5.large") is None  # no API, no spot hint: no made-up number
