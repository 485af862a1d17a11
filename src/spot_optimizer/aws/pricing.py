"""Spot prices (DescribeSpotPriceHistory) and on-demand prices (Pricing API GetProducts).

Spot: one paginated call for all requested types and every AZ of the region, `StartTime=now` so AWS
answers the price in effect per pool; we keep the newest record per pool.
On-demand: GetProducts with the filters that select shared-tenancy Linux without pre-installed
software, parsed from the price-list JSON; cached with a TTL in a file so a restart does not refetch.
When the Pricing API fails, an estimate is derived from the spot price and labelled as such.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spot_optimizer.aws.errors import translated
from spot_optimizer.core.errors import CloudError
from spot_optimizer.core.models import OnDemandPrice, SpotPrice

logger = logging.getLogger(__name__)

PRODUCT_DESCRIPTION = "Linux/UNIX"
# Typical spot discount used only for the labelled fallback estimate (Spot Advisor's median is ~70 %).
ESTIMATE_SPOT_DISCOUNT = 0.70


def _utcnow() -> datetime:
    return datetime.now(UTC)


def ondemand_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    terms = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
        "marketoption": "OnDemand",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in terms.items()]


def parse_price_list(price_list: Iterable[str | dict[str, Any]]) -> float | None:
    """The hourly USD price from GetProducts' PriceList (JSON strings). None if no usable price."""
    prices: list[float] = []
    for item in price_list:
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                if dim.get("unit") not in (None, "Hrs"):
                    continue
                usd = dim.get("pricePerUnit", {}).get("USD")
                try:
                    value = float(usd)
                except (TypeError, ValueError):
                    continue
                if value > 0:
                    prices.append(value)
    # Several SKUs can match (e.g. capacity reservations slip through); the lowest positive rate is
    # the plain on-demand one.
    return min(prices) if prices else None


def latest_per_pool(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], SpotPrice]:
    latest: dict[tuple[str, str], SpotPrice] = {}
    for rec in records:
        key = (rec["InstanceType"], rec["AvailabilityZone"])
        ts = rec["Timestamp"]
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        price = SpotPrice(instance_type=key[0], az=key[1], price=float(rec["SpotPrice"]), timestamp=ts)
        if key not in latest or price.timestamp > latest[key].timestamp:
            latest[key] = price
    return latest


class PriceCollector:
    def __init__(
        self,
        ec2_client: Any,
        pricing_client: Any,
        region: str,
        *,
        cache_path: Path | None = None,
        cache_ttl_s: float = 24 * 3600,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.ec2 = ec2_client
        self.pricing = pricing_client
        self.region = region
        self.cache_path = cache_path
        self.cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, dict[str, Any]] = self._load_cache()
        self.pricing_api_calls = 0

    # --- spot ------------------------------------------------------------------------------------
    def spot_prices(self, instance_types: list[str]) -> list[SpotPrice]:
        if not instance_types:
            return []
        calls = 0
        records: list[dict[str, Any]] = []
        with translated("DescribeSpotPriceHistory"):
            paginator = self.ec2.get_paginator("describe_spot_price_history")
            for page in paginator.paginate(
                InstanceTypes=sorted(set(instance_types)),
                ProductDescriptions=[PRODUCT_DESCRIPTION],
                StartTime=self._clock(),
            ):
                calls += 1
                records.extend(page.get("SpotPriceHistory", []))
        latest = latest_per_pool(records)
        for (itype, az), price in sorted(latest.items()):
            logger.debug("  spot price %s %s: %.5f USD/h (since %s)", itype, az, price.price,
                         price.timestamp.isoformat())
        logger.info("Spot prices collected: %d pools for %d types in %d DescribeSpotPriceHistory call(s)",
                    len(latest), len(set(instance_types)), calls)
        return list(latest.values())

    # --- on-demand -------------------------------------------------------------------------------
    def _load_cache(self) -> dict[str, dict[str, Any]]:
        if not self.cache_path or not self.cache_path.exists():
            return {}
        try:
            data = json.loads(self.cache_path.read_text())
            entries = data.get("ondemand", {})
            logger.debug("On-demand price cache loaded from %s: %d entries", self.cache_path, len(entries))
            return dict(entries)
        except (OSError, ValueError, AttributeError) as exc:
            # A broken cache costs only a refetch; keep the file for inspection, do not overwrite it blindly.
            logger.warning("On-demand price cache %s unreadable (%s); starting empty", self.cache_path, exc)
            return {}

    def _save_cache(self) -> None:
        if not self.cache_path:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_path.parent, prefix=".prices-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": 1, "ondemand": self._cache}, fh, indent=2, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.cache_path)
        except OSError as exc:
            logger.warning("Could not persist the on-demand price cache to %s: %s", self.cache_path, exc)
            Path(tmp).unlink(missing_ok=True)

    def _cached(self, instance_type: str) -> OnDemandPrice | None:
        entry = self._cache.get(f"{self.region}/{instance_type}")
        if not entry:
            return None
        fetched = datetime.fromisoformat(entry["fetched_at"])
        if (self._clock() - fetched).total_seconds() > self.cache_ttl_s:
            return None
        return OnDemandPrice(instance_type=instance_type, region=self.region, price=entry["price"],
                             source="cache")

    def fetch_ondemand(self, instance_type: str) -> float | None:
        """Ask the Pricing API (all pages). Raises CloudError on API failure."""
        price_list: list[str] = []
        with translated("GetProducts"):
            kwargs: dict[str, Any] = {"ServiceCode": "AmazonEC2",
                                      "Filters": ondemand_filters(instance_type, self.region)}
            while True:
                self.pricing_api_calls += 1
                response = self.pricing.get_products(**kwargs)
                price_list.extend(response.get("PriceList", []))
                token = response.get("NextToken")
                if not token:
                    break
                kwargs["NextToken"] = token
        return parse_price_list(price_list)

    def ondemand_price(self, instance_type: str, spot_hint: float | None = None) -> OnDemandPrice | None:
        cached = self._cached(instance_type)
        if cached is not None:
            logger.debug("  on-demand %s %s: %.5f USD/h (cache)", instance_type, self.region, cached.price)
            return cached
        try:
            price = self.fetch_ondemand(instance_type)
        except CloudError as exc:
            logger.warning("Pricing API failed for %s in %s: %s", instance_type, self.region, exc)
            price = None
        if price is not None:
            self._cache[f"{self.region}/{instance_type}"] = {
                "price": price, "fetched_at": self._clock().isoformat()}
            self._save_cache()
            logger.info("  on-demand %s %s: %.5f USD/h (Pricing API)", instance_type, self.region, price)
            return OnDemandPrice(instance_type=instance_type, region=self.region, price=price)
        if spot_hint is not None and spot_hint > 0:
            estimate = round(spot_hint / (1 - ESTIMATE_SPOT_DISCOUNT), 5)
            logger.warning("  on-demand %s %s: %.5f USD/h (ESTIMATE from spot %.5f, Pricing API had no price)",
                           instance_type, self.region, estimate, spot_hint)
            return OnDemandPrice(instance_type=instance_type, region=self.region, price=estimate, estimated=True,
                                 source="estimate-from-spot")
        logger.warning("  on-demand %s %s: no price (Pricing API failed and no spot price to estimate from)",
                       instance_type, self.region)
        return None

    def collect(self, instance_types: list[str]) -> tuple[list[SpotPrice], list[OnDemandPrice]]:
        spot = self.spot_prices(instance_types)
        cheapest: dict[str, float] = {}
        for sp in spot:
            cheapest[sp.instance_type] = min(sp.price, cheapest.get(sp.instance_type, sp.price))
        ondemand = [p for t in sorted(set(instance_types)) if (p := self.ondemand_price(t, cheapest.get(t)))]
        return spot, ondemand
