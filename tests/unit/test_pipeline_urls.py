"""--elasticsearch-url takes one URL or a cluster's nodes, comma-separated (as
`ES_NODES=3 deploy/local/elasticsearch.sh start` prints them)."""

from __future__ import annotations

import pytest

from pipeline.config import shown, url


def test_a_list_of_nodes_is_kept_and_each_is_checked() -> None:
    assert url("http://a:9200/, http://b:9200") == "http://a:9200,http://b:9200"
    with pytest.raises(ValueError, match="http:// or https://"):
        url("http://a:9200,b:9200")


def test_no_password_of_any_node_is_shown() -> None:
    text = shown("https://elastic:s3cret@a:9200,https://elastic:s3cret@b:9200")
    assert "s3cret" not in text
    assert text == "https://***@a:9200,https://***@b:9200"
