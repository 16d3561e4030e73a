"""The appliance's configuration: one YAML file, validated by pydantic.

Every model forbids unknown keys, so a misspelt key fails at load instead of being
silently ignored, and every error names the key path and, where the YAML has it,
the line: ``engine.backend (line 9): must be 'auto', 'onnxruntime' or
'tensorrt'`` (:mod:`edge.config_errors` words them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge.common.model import StrictModel, TlsConfig, topic_segment
from edge.config_errors import describe_validation, describe_yaml_error
from edge.dicom_config import DicomConfig
from edge.errors import ConfigError
from edge.receiver_config import ReceiverConfig


class WatchConfig(StrictModel):
    dir: Path = Field(title="Watch folder", description="Folder the modality or PACS exports into.")
    recursive: bool = Field(True, description="Watch sub-folders too.")
    settle_s: Annotated[float, Field(gt=0, le=600)] = Field(
        2.0,
        description="A file whose size and mtime stay unchanged this long is taken even "
        "without a close-write event (network shares, writers that reopen).",
    )
    ignore: tuple[str, ...] = Field(
        (".*", "*.part", "*.partial", "*.tmp", "*.temp", "*~"),
        description="Shell patterns of file names still being written; taken at rename.",
    )


class StudyConfig(StrictModel):
    quiet_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        30.0,
        description="A study without its four standard views is published this long "
        "after its last image arrived, with missing_views listed.",
    )


class ShadowConfig(StrictModel):
    """The budget of a shadow engine (``edge engines shadow``), so that it never starves
    the serving engine on a box without a GPU."""

    when_idle: bool = Field(
        True,
        title="Shadow only when idle",
        description="Admit a study to the shadow (at its first image) only when no other "
        "image waits for the serving engine; images skipped are counted (health "
        "counters.shadow_skipped).",
    )
    max_share: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5,
        title="Maximum share of inference time",
        description="The shadow engine's largest share of the inference worker's time "
        "over its recent batches (0.5: as much as the serving engine); beyond it, new "
        "studies are not shadowed, and their images are counted as skipped.",
    )


class EngineConfig(StrictModel):
    bundle: Path | None = Field(
        None,
        title="Engine bundle",
        description="Folder holding manifest.yaml; served only while the engine store "
        "(state_dir/engines) has no current engine.",
    )
    trusted_keys: tuple[Path, ...] = Field(
        (),
        title="Trusted signing keys",
        description="Ed25519 public keys (PEM) whose bundle signatures are accepted.",
    )
    backend: Literal["auto", "onnxruntime", "tensorrt"] = Field(
        "auto", description="auto picks TensorRT where it and a GPU are present."
    )
    threads: Annotated[int, Field(ge=0, le=256)] = Field(
        0, description="Intra-op threads for ONNX Runtime; 0 means one per core."
    )
    shadow: ShadowConfig = Field(
        default_factory=ShadowConfig,
        description="The budget of a candidate engine scoring in shadow.",
    )


class DecodeConfig(StrictModel):
    workers: Annotated[int, Field(ge=0, le=64)] = Field(
        0, description="Images decoded at once; 0 means one per core."
    )
    max_pixels: Annotated[int, Field(gt=0)] = Field(
        120_000_000,
        description="Images whose header claims more pixels (rows x columns x frames) "
        "are refused before any allocation.",
    )
    pool: Literal["process", "thread"] = Field(
        "process",
        description="process: decoders run in worker processes, so one that crashes or hangs "
        "on a hostile file costs that file only; thread: in the daemon (less memory).",
    )
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        120.0,
        description="A decode running longer is stopped and its file quarantined "
        "(process pool only).",
    )
    score_tolerance: Annotated[float, Field(ge=0, le=1)] = Field(
        0.015,
        description="JPEG 2000 and HTJ2K decode at the coarsest resolution level measured "
        "to keep the 99th percentile of |score - score of a full decode| within this; "
        "0 decodes at full resolution.",
    )
    gpu: Literal["auto", "off"] = Field(
        "auto",
        description="auto: JPEG 2000 and HTJ2K decode on the GPU where nvImageCodec and a GPU "
        "are present, any failure falling back to the CPU (counted in health as "
        "gpu_decode_fallbacks); off: always on the CPU.",
    )


class MqttConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topic_prefix: str = Field("edge", description="First topic segment.")
    client_id: str | None = Field(None, description="Defaults to edge-{site}-{device}.")
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    tls: TlsConfig | None = None
    username: str | None = Field(None, description="User name for the broker, if it asks for one.")
    password_file: Path | None = Field(
        None, description="File holding the broker password (its first line); never the YAML."
    )
    password_credential: str | None = Field(
        None,
        description="Name of a systemd credential (LoadCredential=) holding the password, "
        "read from $CREDENTIALS_DIRECTORY.",
    )
    password: None = Field(
        None,
        description="Refused: a password is never written in the YAML; use "
        "mqtt.password_file or mqtt.password_credential.",
    )
    outbox_max: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1000,
        description="Results sent and awaiting the broker's acknowledgement at most; "
        "more wait in the journal (and health raises outbox_full).",
    )
    confirm: Literal["hub", "broker"] = Field(
        "hub",
        description="hub: a result is kept and sent again until the hub's collector confirms "
        "it is in its database; broker: done at the broker's PUBACK (a box with no collector).",
    )
    confirm_timeout_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        300.0,
        description="Results the hub has not confirmed this long after they were made are "
        "sent again (mqtt.confirm: hub).",
    )
    max_in_flight: Annotated[int, Field(ge=1, le=65535)] = Field(
        20,
        description="Results sent and not yet acknowledged by the broker at most; fewer when "
        "the broker's Receive Maximum (MQTT 5 CONNACK) is lower.",
    )
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0, description="First reconnect delay; doubles per failed attempt, with jitter."
    )
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0, description="Cap of the reconnect delay."
    )

    _check_prefix = field_validator("topic_prefix")(topic_segment)

    @field_validator("password", mode="before")
    @classmethod
    def _no_plain_password(cls, value: object) -> None:
        if value is not None:
            raise ValueError(
                "a password is never read from the YAML: put it in a file "
                "(mqtt.password_file) or a systemd credential (mqtt.password_credential)"
            )
        return None

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("set mqtt.password_file or mqtt.password_credential, not both")
        if self.username is None and (self.password_file or self.password_credential):
            raise ValueError("a password needs mqtt.username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("mqtt.reconnect_max_s must not be below mqtt.reconnect_min_s")
        return self


class HealthConfig(StrictModel):
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    min_free_mb: Annotated[int, Field(ge=0)] = Field(
        1024,
        description="Health raises state_disk_low when state_dir has less free space (MiB).",
    )
    stuck_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        120.0,
        title="Stuck-stage limit",
        description="A stage holding one file or batch longer than this counts as stuck: "
        "the systemd watchdog pings stop and systemd restarts the service.",
    )
    unconfirmed_alarm_s: Annotated[float, Field(gt=0, le=30 * 86400)] = Field(
        3600.0,
        description="Health raises hub_unconfirmed when the oldest result the hub has not "
        "confirmed is older than this (mqtt.confirm: hub).",
    )


class JournalConfig(StrictModel):
    keep_days: Annotated[float, Field(gt=0, le=3650)] = Field(
        30.0,
        description="Delivered results, and files that have left the watch folder, are "
        "forgotten this long after. Until then an image sent again is a duplicate.",
    )


class LogConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(StrictModel):
    site: str = Field(title="Site", description="Clinic name; an MQTT topic segment.")
    device: str = Field(title="Device", description="Box name within the site; a topic segment.")
    state_dir: Path = Field(description="Journal, quarantine and engine store.")
    watch: WatchConfig
    study: StudyConfig = StudyConfig()
    engine: EngineConfig
    decode: DecodeConfig = DecodeConfig()
    mqtt: MqttConfig = MqttConfig()
    health: HealthConfig = HealthConfig()
    journal: JournalConfig = JournalConfig()
    log: LogConfig = LogConfig()
    receiver: ReceiverConfig | None = None
    stop_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0,
        title="Stop deadline",
        description="A stop waits this long at most, in all, for the files in hand, the "
        "engine, the outbox and an engine switch; keep it below the unit's TimeoutStopSec "
        "(90 s). What is not finished is taken again at the next start.",
    )
    dicom: DicomConfig = DicomConfig()

    _check_site = field_validator("site", "device")(topic_segment)

    @property
    def quarantine_dir(self) -> Path:
        return self.state_dir / "quarantine"

    @property
    def engine_store_dir(self) -> Path:
        return self.state_dir / "engines"

    @property
    def spool_dir(self) -> Path:
        """Where the DICOM receiver keeps each instance until it is scored."""
        return self.state_dir / "spool"

    def topic(self, leaf: str) -> str:
        """``{topic_prefix}/{site}/{device}/{leaf}``."""
        return f"{self.mqtt.topic_prefix}/{self.site}/{self.device}/{leaf}"


def load_config(path: Path) -> Config:
    """Read and validate a configuration file.

    Relative paths in the file are resolved against the file's folder, so a
    configuration can travel with the files it names.

    Raises
    ------
    ConfigError
        With one line per problem: the key path, the YAML line, what was expected.
    """
    config = validate_yaml(path, Config)
    return _resolve_paths(config, path.parent.resolve())


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_yaml(path: Path, model: type[ModelT]) -> ModelT:
    """Read a YAML file and validate it as ``model``; errors name key path and line.

    An empty file is validated as an empty mapping, so its missing keys are named.

    Raises
    ------
    ConfigError
        Unreadable, not YAML, not a mapping, or one line per invalid key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(describe_yaml_error(path, exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation(path, exc, _key_lines(node), model)) from None


def _key_lines(node: yaml.Node | None) -> dict[tuple[str, ...], int]:
    """Map each key path of a composed YAML document to its 1-based line."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(current: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                key = (*prefix, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                key = (*prefix, str(index))
                lines[key] = item.start_mark.line + 1
                walk(item, key)

    if node is not None:
        walk(node, ())
    return lines


def _resolve_paths(config: Config, base: Path) -> Config:
    def resolve(value: Path) -> Path:
        return value if value.is_absolute() else (base / value)

    updates: dict[str, Any] = {
        "state_dir": resolve(config.state_dir),
        "watch": config.watch.model_copy(update={"dir": resolve(config.watch.dir)}),
        "engine": config.engine.model_copy(
            update={
                "bundle": None if config.engine.bundle is None else resolve(config.engine.bundle),
                "trusted_keys": tuple(resolve(key) for key in config.engine.trusted_keys),
            }
        ),
    }
    if config.mqtt.password_file is not None:
        updates["mqtt"] = config.mqtt.model_copy(
            update={"password_file": resolve(config.mqtt.password_file)}
        )
    if config.mqtt.tls is not None:
        tls = config.mqtt.tls
        updates["mqtt"] = updates.get("mqtt", config.mqtt).model_copy(
            update={
                "tls": tls.model_copy(
                    update={
                        name: resolve(getattr(tls, name))
                        for name in ("ca_file", "cert_file", "key_file")
                        if getattr(tls, name) is not None
                    }
                )
            }
        )
    if config.receiver is not None and config.receiver.tls is not None:
        updates["receiver"] = _receiver_paths_resolved(config.receiver, resolve)
    updates["dicom"] = config.dicom.resolved(resolve)
    return config.model_copy(update=updates)


def _receiver_paths_resolved(receiver: ReceiverConfig, resolve: Any) -> ReceiverConfig:
    tls = receiver.tls
    assert tls is not None
    files = {
        name: resolve(getattr(tls, name))
        for name in ("cert_file", "key_file", "ca_file")
        if getattr(tls, name) is not None
    }
    return receiver.model_copy(update={"tls": tls.model_copy(update=files)})
