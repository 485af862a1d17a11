"""The AWS wire formats the shim speaks: EC2 query protocol (form body in, XML out) and the Pricing
API's JSON 1.1 protocol. Pure functions, no I/O."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from spot_optimizer.emulator.market import REGION_LOCATIONS, OnDemandTable

EC2_XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"


# --- EC2 query protocol ---------------------------------------------------------------------------
def parse_query(body: bytes, query_string: str = "") -> dict[str, str]:
    """Flat `Key.N.Sub` -> value pairs of a form-encoded body (and URL query)."""
    params: dict[str, str] = {}
    for raw in (query_string, body.decode("utf-8", "replace")):
        for key, values in parse_qs(raw, keep_blank_values=True).items():
            params[key] = values[-1]
    return params


def query_list(params: dict[str, str], prefix: str) -> list[str]:
    """Values of `prefix.1`, `prefix.2`, ... in index order."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)$")
    found = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pattern.match(k)))
    return [v for _, v in found]


def query_filters(params: dict[str, str]) -> dict[str, list[str]]:
    """`Filter.N.Name` / `Filter.N.Value.M` -> {name: [values]}."""
    filters: dict[str, list[str]] = {}
    for key, name in params.items():
        m = re.fullmatch(r"Filter\.(\d+)\.Name", key)
        if m:
            filters.setdefault(name, []).extend(query_list(params, f"Filter.{m.group(1)}.Value"))
    return filters


def ec2_time(moment: float) -> str:
    stamp = datetime.fromtimestamp(moment, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def parse_ec2_time(value: str) -> float:
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def ec2_error(code: str, message: str, request_id: str | None = None) -> bytes:
    rid = request_id or str(uuid.uuid4())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"</Error></Errors><RequestID>{rid}</RequestID></Response>"
    ).encode()


def spot_price_history_xml(items: Iterable[dict[str, str]], next_token: str | None) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<DescribeSpotPriceHistoryResponse xmlns="{EC2_XMLNS}">',
        f"<requestId>{uuid.uuid4()}</requestId><spotPriceHistorySet>",
    ]
    for item in items:
        parts.append(
            "<item>"
            f"<instanceType>{escape(item['instance_type'])}</instanceType>"
            f"<productDescription>{escape(item['product_description'])}</productDescription>"
            f"<spotPrice>{item['spot_price']}</spotPrice>"
            f"<timestamp>{item['timestamp']}</timestamp>"
            f"<availabilityZone>{escape(item['availability_zone'])}</availabilityZone>"
            "</item>"
        )
    parts.append("</spotPriceHistorySet>")
    parts.append(f"<nextToken>{escape(next_token)}</nextToken>" if next_token else "<nextToken/>")
    parts.append("</DescribeSpotPriceHistoryResponse>")
    return "".join(parts).encode()


def encode_token(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid NextToken {token!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"invalid NextToken {token!r}")
    return value


# --- Pricing API (JSON 1.1) ---------------------------------------------------------------------
PRICING_TARGET_PREFIX = "AWSPriceListService."
OFFER_TERM_CODE = "JRTCKXETXF"
RATE_CODE = "6YS6EN2CT7"


def json_error(code: str, message: str) -> bytes:
    return json.dumps({"__type": code, "message": message}).encode()


def _sku(region: str, instance_type: str) -> str:
    return hashlib.sha1(f"{region}/{instance_type}/linux".encode()).hexdigest()[:16].upper()


def product_document(table: OnDemandTable, instance_type: str) -> dict[str, Any]:
    """One price-list entry in the Pricing API's `aws_v1` format (Linux, shared tenancy, on-demand)."""
    od = table.prices[instance_type]
    region = table.region
    sku = _sku(region, instance_type)
    attributes = {
        "servicecode": "AmazonEC2",
        "servicename": "Amazon Elastic Compute Cloud",
        "location": REGION_LOCATIONS.get(region, region),
        "locationType": "AWS Region",
        "regionCode": region,
        "instanceType": instance_type,
        "instanceFamily": "General purpose",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "marketoption": "OnDemand",
        "licenseModel": "No License required",
        "operation": "RunInstances",
        "usagetype": f"BoxUsage:{instance_type}",
    }
    if od.vcpu is not None:
        attributes["vcpu"] = str(od.vcpu)
    if od.memory:
        attributes["memory"] = od.memory
    term_key = f"{sku}.{OFFER_TERM_CODE}"
    return {
        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {
            "OnDemand": {
                term_key: {
                    "priceDimensions": {
                        f"{term_key}.{RATE_CODE}": {
                            "unit": "Hrs",
                            "endRange": "Inf",
                            "description": f"${od.price:.4f} per On Demand Linux {instance_type} Instance Hour",
                            "appliesTo": [],
                            "rateCode": f"{term_key}.{RATE_CODE}",
                            "beginRange": "0",
                            "pricePerUnit": {"USD": f"{od.price:.10f}"},
                        }
                    },
                    "sku": sku,
                    "effectiveDate": table.publication_date,
                    "offerTermCode": OFFER_TERM_CODE,
                    "termAttributes": {},
                }
            }
        },
        "version": table.publication_date.replace("-", "").replace(":", "")[:15],
        "publicationDate": table.publication_date,
    }


def _filter_matches(attributes: dict[str, str], flt: dict[str, str]) -> bool:
    field, kind, value = flt.get("Field", ""), flt.get("Type", "TERM_MATCH"), flt.get("Value", "")
    actual = attributes.get(field)
    if field == "ServiceCode":
        actual = attributes.get("servicecode")
    if actual is None:
        return kind == "NONE_OF"
    a, v = actual.lower(), value.lower()
    if kind in ("TERM_MATCH", "EQUALS"):
        return a == v
    if kind == "CONTAINS":
        return v in a
    if kind == "ANY_OF":
        return a in {x.strip() for x in v.split(",")}
    if kind == "NONE_OF":
        return a not in {x.strip() for x in v.split(",")}
    raise ValueError(f"unsupported filter type {kind}")


def get_products(table: OnDemandTable, request: dict[str, Any]) -> dict[str, Any]:
    """Answer a GetProducts request body: filters, MaxResults (default 100) and NextToken."""
    if request.get("ServiceCode") != "AmazonEC2":
        return {"FormatVersion": "aws_v1", "PriceList": []}
    filters = request.get("Filters") or []
    docs = []
    for instance_type in sorted(table.prices):
        doc = product_document(table, instance_type)
        if all(_filter_matches(doc["product"]["attributes"], f) for f in filters):
            docs.append(doc)
    offset = int(decode_token(request["NextToken"]).get("o", 0)) if request.get("NextToken") else 0
    limit = max(1, min(100, int(request.get("MaxResults") or 100)))
    page = docs[offset : offset + limit]
    answer: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": [json.dumps(d) for d in page]}
    if offset + limit < len(docs):
        answer["NextToken"] = encode_token({"o": offset + limit})
    return answer
