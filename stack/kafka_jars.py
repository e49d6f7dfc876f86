"""Apache Kafka's jars and JVM command line: Maven resolves ``kafka/pom.xml``, the classpath is cached.

The broker is the ``org.apache.kafka:kafka_2.13`` jar from Maven Central, the same code as
the ``apache/kafka`` image in ``kafka/docker-compose.yml``. Maven resolves the runtime
classpath (jars cached in ``~/.m2``, the classpath itself under ``~/.cache/footfall``, keyed
by the pom's hash); :func:`java_command` is how every Kafka JVM (node, storage tool) starts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from footfall.errors import FootfallError

__all__ = ["JAVA_HINT", "java_command", "kafka_classpath"]

_KAFKA_DIR: Final = Path(__file__).resolve().parent.parent / "kafka"
_POM: Final = _KAFKA_DIR / "pom.xml"
_LOG4J: Final = _KAFKA_DIR / "log4j2.properties"
_CACHE_DIR: Final = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "footfall"
JAVA_HINT: Final = "Apache Kafka needs Java 17 or newer: install a JDK (apt-get install openjdk-17-jre-headless)"
_MAVEN_HINT: Final = "Apache Kafka's jars are resolved with Maven: install it (apt-get install maven)"


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise FootfallError(f"{tool} not found on PATH. {hint}")
    return path


def kafka_classpath() -> str:
    """The broker's runtime classpath, resolved by Maven from ``kafka/pom.xml``.

    Cached per pom content; resolved again if a cached jar has gone from ``~/.m2``.

    Raises:
        FootfallError: Java or Maven is missing, or Maven could not resolve the jars.
    """
    _require("java", JAVA_HINT)
    if not _POM.is_file():
        raise FootfallError(f"{_POM} is missing: run Apache Kafka from a Footfall source checkout")
    digest = hashlib.sha256(_POM.read_bytes()).hexdigest()[:16]
    cached = _CACHE_DIR / f"kafka-classpath-{digest}.txt"
    if cached.is_file():
        classpath = cached.read_text().strip()
        if classpath and all(Path(jar).is_file() for jar in classpath.split(os.pathsep)):
            return classpath
    mvn = _require("mvn", _MAVEN_HINT)
    _CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    result = subprocess.run(  # noqa: S603 - fixed tool, our own arguments
        [mvn, "-q", "-B", "-f", str(_POM), "dependency:build-classpath", f"-Dmdep.outputFile={partial}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not partial.is_file():
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise FootfallError(f"Maven could not resolve Apache Kafka from {_POM}: " + " | ".join(tail))
    partial.replace(cached)
    return cached.read_text().strip()


def java_command(classpath: str, heap: str) -> list[str]:
    """``java`` with Kafka's JVM options, heap ``heap`` and ``classpath``; add the main class and its arguments.

    Raises:
        FootfallError: no ``java`` on PATH.
    """
    return [
        _require("java", JAVA_HINT),
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={_LOG4J}",
        "-cp",
        classpath,
    ]
