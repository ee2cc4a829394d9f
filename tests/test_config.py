"""Configuration: presets, environment, JSON overrides, the builder, validation."""

from __future__ import annotations

import pytest

from memo import ConfigError
from memo._redis_options import RedisURL
from memo.config import PRESETS, CacheConfig, CacheConfigBuilder, config_from_env, get_preset

# DESIGN's preset table: ttl, memory entries, compression threshold, level, hash threshold.
EXPECTED = {
    "minimal": (900, 25, 5000, 1, None),
    "simple": (3600, 100, 1000, 6, None),
    "development": (600, 50, 2000, 3, None),
    "production": (7200, 500, 500, 9, None),
    "ai-development": (1800, 100, 1000, 6, 500),
    "ai-production": (14400, 1000, 300, 9, 1000),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_preset_has_the_documented_values(name: str) -> None:
    c = get_preset(name)
    assert EXPECTED[name] == (
        c.default_ttl,
        c.memory_cache_size,
        c.compression_threshold,
        c.compression_level,
        c.text_hash_threshold,
    )


def test_ai_presets_carry_their_operation_ttls() -> None:
    assert {
        "summarize": 1800,
        "sentiment": 900,
        "key_points": 1200,
        "questions": 1500,
        "qa": 900,
    } == dict(PRESETS["ai-development"].operation_ttls)
    assert {
        "summarize": 14400,
        "sentiment": 7200,
        "key_points": 10800,
        "questions": 9600,
        "qa": 7200,
    } == dict(PRESETS["ai-production"].operation_ttls)


def test_disabled_turns_caching_off() -> None:
    assert PRESETS["disabled"].enabled is False
    assert sorted(PRESETS) == sorted(
        [
            "disabled",
            "minimal",
            "simple",
            "development",
            "production",
            "ai-development",
            "ai-production",
        ]
    )


def test_an_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="ai-development"):
        get_preset("prod")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("default_ttl", 0),
        ("default_ttl", -5),
        ("compression_level", 0),
        ("compression_level", 10),
        ("memory_cache_size", 0),
        ("redis_url", "http://localhost:6379"),
        ("redis_url", "localhost:6379"),
        ("operation_ttls", {"summarize": -1}),
        ("enable_memory_cache", "yes"),
    ],
)
def test_bad_values_are_caught_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field.split("_")[0]) as info:
        CacheConfig(**{field: value})  # type: ignore[arg-type]
    assert repr(value).strip("'")[:8] in str(info.value) or field in str(info.value)


def test_environment_picks_the_preset_and_overrides_it() -> None:
    config = config_from_env(
        {
            "CACHE_PRESET": "production",
            "CACHE_REDIS_URL": "redis://cache:6379/2",
            "CACHE_NAMESPACE": "shop",
        }
    )
    assert ("production", 7200, "redis://cache:6379/2", "shop") == (
        config.preset,
        config.default_ttl,
        config.redis_url,
        config.namespace,
    )


def test_custom_config_json_beats_the_other_variables_and_the_preset() -> None:
    config = config_from_env(
        {
            "CACHE_PRESET": "development",
            "CACHE_NAMESPACE": "from-variable",
            "CACHE_CUSTOM_CONFIG": (
                '{"namespace": "from-json", "l1_cache_size": 500, "default_ttl": 3600}'
            ),
        }
    )
    assert ("from-json", 500, 3600, 3) == (
        config.namespace,
        config.memory_cache_size,
        config.default_ttl,
        config.compression_level,
    )


def test_the_builder_beats_the_environment() -> None:
    env = {"CACHE_CUSTOM_CONFIG": '{"compression_level": 2, "memory_cache_size": 7}'}
    config = CacheConfigBuilder().for_environment("production").with_compression(level=4).build(env)
    assert (4, 7, 7200) == (config.compression_level, config.memory_cache_size, config.default_ttl)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"compresion_level": 3}', "compresion_level"),
    ],
)
def test_malformed_custom_config_says_what_is_wrong(raw: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_env({"CACHE_CUSTOM_CONFIG": raw})


def test_enable_ai_cache_false_turns_ai_caching_off_but_keeps_the_ai_settings() -> None:
    config = config_from_env({"CACHE_PRESET": "ai-production", "ENABLE_AI_CACHE": "false"})
    assert config.enable_ai_cache is False
    assert config.has_ai_features and config.operation_ttls["summarize"] == 14400
    assert config_from_env({"ENABLE_AI_CACHE": "1"}).enable_ai_cache is True
    with pytest.raises(ConfigError, match="ENABLE_AI_CACHE"):
        config_from_env({"ENABLE_AI_CACHE": "perhaps"})


def test_builder_matches_the_usage_guide() -> None:
    config = (
        CacheConfigBuilder()
        .for_environment("production")
        .with_redis("redis://prod-redis:6379", use_tls=True)
        .with_compression(threshold=1000, level=6)
        .with_memory_cache(size=200)
        .with_ai_features(
            text_hash_threshold=1000, operation_ttls={"summarize": 14400, "translate": 43200}
        )
        .build({})
    )
    assert config.use_tls is True
    assert config.has_ai_features
    assert 43200 == config.operation_ttls["translate"]


def test_passwords_never_show_in_a_config_repr() -> None:
    config = CacheConfig(redis_url="redis://user:hunter2@cache:6379/0")
    by_query = CacheConfig(redis_url="unix:///run/redis.sock?password=abc")
    assert "hunter2" not in repr(config)
    assert "abc" not in repr(by_query)
    assert "redis://user:***@cache:6379/0" in repr(config)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://u:p%40ss@h/1", "rediss://u:***@h:6379/1"),
        ("redis://h:6379", "redis://h:6379/0"),
        ("unix:///tmp/r.sock?password=x", "unix://:***@/tmp/r.sock"),
    ],
)
def test_a_masked_url_hides_passwords_and_shows_port_and_database(url: str, masked: str) -> None:
    assert masked == RedisURL.parse(url).masked


async def test_each_precedence_step_wins_over_the_next() -> None:
    """compression_level set at every layer; taking away the strongest shows the next."""
    from memo import CacheFactory

    env = {
        "CACHE_PRESET": "production",  # level 9
        "CACHE_REDIS_URL": "redis://from-variable:6379/0",
        "CACHE_NAMESPACE": "from-variable",
        "CACHE_CUSTOM_CONFIG": '{"compression_level": 2, "namespace": "from-json"}',
    }
    builder = CacheConfigBuilder().with_compression(level=4)
    built = builder.build(env)
    explicit = await CacheFactory().create_cache_from_config(built, compression_level=1)
    assert 1 == explicit.compression_level  # explicit argument > builder
    await explicit.aclose()
    assert 4 == built.compression_level  # builder > CACHE_CUSTOM_CONFIG
    assert 2 == config_from_env(env).compression_level  # CACHE_CUSTOM_CONFIG > variables
    assert "from-json" == config_from_env(env).namespace
    no_json = {k: v for k, v in env.items() if k != "CACHE_CUSTOM_CONFIG"}
    assert "from-variable" == config_from_env(no_json).namespace  # variables > preset
    assert 9 == config_from_env(no_json).compression_level  # the preset, at the bottom
    assert "default" == config_from_env({"CACHE_PRESET": "production"}).namespace
