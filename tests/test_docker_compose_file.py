"""What needs no engine: the generated compose file, the container cap's cgroup files, the one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devices.caps.base import CapUnavailable
from devices.caps.container import ContainerLimit, engine_limits
from devices.profile import DeviceProfile
from harness.plan.spec import load_spec
from tests.helpers import CliResult, edgebench, write_spec

ROOT = Path(__file__).resolve().parent.parent
NO_ENGINE = "unix:///nonexistent/docker.sock"


def without_engine(*args: str, cwd: Path = ROOT) -> CliResult:
    """The CLI in the checkout (or `cwd`) with DOCKER_HOST at a socket no engine answers on."""
    return edgebench(*args, cwd=cwd, env={"DOCKER_HOST": NO_ENGINE})


def test_committed_compose_file_is_what_edgebench_compose_writes_for_the_default_spec():
    proc = without_engine("compose", "--no-engine-check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / "docker-compose.yml").read_text(), (
        "regenerate: edgebench compose > docker-compose.yml"
    )


def test_one_service_per_device_with_its_caps_then_the_report():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    devices = load_spec(None).devices
    assert list(services) == ["prepare", *(d.name for d in devices), "report"]
    for device in devices:
        service = services[device.name]
        assert service["mem_limit"] == service["memswap_limit"] == device.memory_bytes
        assert service["cpu_quota"] == int(device.cpus * service["cpu_period"])
        assert service["network_mode"] == "none" and service["read_only"] is True and service["init"] is True
        assert service["command"][:3] == ["run", "--device", device.name]
        assert "/results/${EDGEBENCH_RUN:-quick}" in service["command"]
    report = services["report"]
    assert report["command"] == ["report", "/results/${EDGEBENCH_RUN:-quick}"]
    assert set(report["depends_on"]) == {d.name for d in devices}


def test_device_containers_run_one_after_another_and_each_records_its_predecessor():
    """Concurrent device containers would share the host's cores (4-core quotas on a 2-core host measured every
    step time under contention): each device waits for the one before it, and tells its run info which."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    names = [d.name for d in load_spec(None).devices]
    done = {"condition": "service_completed_successfully"}
    for before, device in zip([None, *names[:-1]], names, strict=True):
        service = services[device]
        assert service["depends_on"] == {"prepare": done, **({before: done} if before else {})}
        assert service["environment"]["EDGEBENCH_SLICE_AFTER"] == (before or "")


def test_every_service_is_hardened_with_a_memory_limit_and_no_swap():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, service in services.items():
        assert service["mem_limit"] == service["memswap_limit"] > 0 and service["oom_kill_disable"] is False, name
        assert service["network_mode"] == "none" and service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"] and service["security_opt"] == ["no-new-privileges:true"], name
        # Writable: /tmp (a tmpfs), the results, the cache volume; the default spec is the image's: nothing else.
        assert service["tmpfs"] == ["/tmp"], name
        assert service["volumes"] == ["./results:/results", "edgebench-cache:/cache"], name
    assert compose["volumes"] == {"edgebench-cache": {}}
    assert services["report"]["user"] == "${EDGEBENCH_USER:-1000:1000}" and "cap_add" not in services["report"]
    # A device service starts as uid 0 with the four capabilities its harness keeps as EDGEBENCH_USER, to run its
    # cells as a second uid (harness.run.harness_user): the results are not theirs to write.
    for device in load_spec(None).devices:
        service = services[device.name]
        assert (service["user"], service["cap_add"]) == ("0:0", ["CHOWN", "KILL", "SETGID", "SETUID"]), device.name
        assert service["environment"]["EDGEBENCH_HARNESS_USER"] == "${EDGEBENCH_USER:-1000:1000}", device.name
    # The one exception, as small as it can be: uid 0 with the two capabilities that hand over the results, given
    # its values in its environment by an exec-form command (no shell parses what .env holds).
    prepare = services["prepare"]
    assert (prepare["user"], prepare["cap_add"], prepare["mem_limit"]) == ("0:0", ["CHOWN", "DAC_OVERRIDE"], 32 << 20)
    assert prepare["entrypoint"] == ["python", "-I", "-m", "harness.run.prepare_results"]
    assert prepare["command"] == ["/results", "/cache"]
    assert prepare["environment"] == {
        "EDGEBENCH_RUN": "${EDGEBENCH_RUN:-quick}",
        "EDGEBENCH_OWNER": "${EDGEBENCH_USER:-1000:1000}",
    }


def test_a_spec_gets_its_own_file_mounting_only_the_files_it_reads(tmp_path):
    """Not the whole directory (its .env, .git and whatever else lies there): the spec, its device files, its task
    files and model folders, read-only, each at its path under /project, the containers' working directory."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "lab.yaml").write_text("devices:\n  - {name: lab, memory: 1GB, cpus: 1}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reviews.csv").write_text("text,label\n" + "good film,1\nbad film,0\n" * 8)
    (tmp_path / ".env").write_text("HF_TOKEN=secret\n")
    spec = write_spec(
        tmp_path / "specs",
        "name: mine\ndevice_files: [lab.yaml]\ndevices: [lab]\n"
        "matrix: {model: opt-1m, task: data/reviews.csv, batch: 2, max_steps: 1}\n",
    )
    proc = without_engine("compose", str(spec), "--no-engine-check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# Generated by `edgebench compose specs/spec.yaml`")
    services = yaml.safe_load(proc.stdout)["services"]
    assert list(services) == ["prepare", "lab", "report"]
    device = services["lab"]
    assert device["command"][:2] == ["run", "specs/spec.yaml"] and device["working_dir"] == "/project"
    assert device["volumes"] == [
        "./results:/results",
        "edgebench-cache:/cache",
        "./data/reviews.csv:/project/data/reviews.csv:ro",
        "./specs/lab.yaml:/project/specs/lab.yaml:ro",
        "./specs/spec.yaml:/project/specs/spec.yaml:ro",
    ]
    for name in ("prepare", "report"):
        assert services[name]["volumes"] == ["./results:/results", "edgebench-cache:/cache"], name
    assert services["report"]["command"] == ["report", "/results/${EDGEBENCH_RUN:-mine}"]


@pytest.mark.parametrize("argv", [("run", "--executor", "docker"), ("compose",)], ids=["run", "compose"])
def test_no_engine_is_one_line_naming_what_to_install_and_start(tmp_path, argv):
    out = tmp_path / "out"
    extra = ("--out", str(out)) if argv[0] == "run" else ()
    proc = without_engine(*argv, *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"edgebench: error: no Docker engine answers at {NO_ENGINE}"
    )
    assert "apt-get install docker.io" in lines[0] and "start it" in lines[0]
    assert not proc.stdout and not out.exists()


def test_compose_refuses_a_spec_the_containers_cannot_see(tmp_path):
    spec = write_spec(tmp_path, "devices: [rpi-4-2gb]\nmatrix: {model: opt-1m, max_steps: 1}\n")
    (tmp_path / "elsewhere").mkdir()
    proc = without_engine("compose", str(spec), "--no-engine-check", cwd=tmp_path / "elsewhere")
    assert proc.returncode == 2 and "outside the current directory" in proc.stderr
    inside = tmp_path / "inside"
    inside.mkdir()
    spec = write_spec(inside, "devices: [rpi-4-2gb]\nmatrix: {model: opt-1m, max_steps: 1, task: ../data.csv}\n")
    (tmp_path / "data.csv").write_text("text,label\n" + "good film,1\nbad film,0\n" * 8)
    proc = without_engine("compose", "spec.yaml", "--no-engine-check", cwd=inside)
    assert proc.returncode == 2 and "../data.csv is outside the current directory" in proc.stderr, proc.stderr


def test_engine_limits_are_the_profile_without_swap():
    profile = DeviceProfile(name="pi", memory="512MiB", cpus=2.5)
    assert engine_limits(profile) == {
        "mem_limit": 512 << 20,
        "memswap_limit": 512 << 20,
        "cpu_period": 100_000,
        "cpu_quota": 250_000,
        "oom_kill_disable": False,
        "pids_limit": 1024,
    }


def fake_cgroup(root: Path, version: int, limit: str, peak: int, oom_kills: int) -> Path:
    """A container's view of its own memory cgroup (v1: under memory/, v2: at the root)."""
    if version == 1:
        d = root / "memory"
        d.mkdir(parents=True)
        (d / "memory.limit_in_bytes").write_text(limit)
        (d / "memory.max_usage_in_bytes").write_text(str(peak))
        (d / "memory.oom_control").write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kills}\n")
        return d
    (root / "memory.max").write_text(limit)
    (root / "memory.peak").write_text(str(peak))
    (root / "memory.events").write_text(f"low 0\nhigh 0\nmax 3\noom 1\noom_kill {oom_kills}\n")
    return root


@pytest.mark.parametrize("version", [1, 2])
def test_container_cap_reads_oom_and_a_peak_that_rose_during_the_cell(tmp_path, version):
    profile = DeviceProfile(name="pi", memory=512 << 20)
    files = fake_cgroup(tmp_path, version, str(512 << 20), peak=100 << 20, oom_kills=0)
    with ContainerLimit(profile, "cell", mount=tmp_path) as cap:
        events = "memory.oom_control" if version == 1 else "memory.events"
        peak = "memory.max_usage_in_bytes" if version == 1 else "memory.peak"
        (files / peak).write_text(str(512 << 20))
        (files / events).write_text((files / events).read_text().replace("oom_kill 0", "oom_kill 1"))
        reading = cap.reading()
    assert (reading.peak_bytes, reading.oom_killed, reading.source) == (512 << 20, True, "container")
    with ContainerLimit(profile, "next", mount=tmp_path) as cap:  # the mark did not rise: no figure, no OOM
        assert (cap.reading().peak_bytes, cap.reading().oom_killed) == (None, False)


@pytest.mark.parametrize("limit", ["max", str(1 << 30), str(9223372036854771712)])
def test_container_cap_refuses_a_container_larger_than_the_device(tmp_path, limit):
    fake_cgroup(tmp_path, 2 if limit == "max" else 1, limit, peak=0, oom_kills=0)
    with (
        pytest.raises(CapUnavailable, match="is not device pi's cap"),
        ContainerLimit(DeviceProfile(name="pi", memory=512 << 20), "cell", mount=tmp_path),
    ):
        pass


def test_a_throttled_spec_gives_each_device_container_its_speed_as_cpu_quota(tmp_path):
    spec = "name: slow\nclock: device-throttled\ndevices: [jetson-nano, rpi-4-4gb]\nmatrix: {model: opt-1m}\n"
    write_spec(tmp_path, spec)
    proc = without_engine("compose", "spec.yaml", "--no-engine-check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    loaded = load_spec(tmp_path / "spec.yaml")
    for device in loaded.devices:
        service, clock = services[device.name], loaded.clocks[device.name]
        share = service["cpu_quota"] / service["cpu_period"]
        assert share == pytest.approx(device.gflops / clock.host_gflops_per_core, rel=0.01)
        assert share < 1  # a board's four cores do less than one host core


@pytest.mark.parametrize(("quota", "ok"), [("20000 500000", True), ("max 100000", False), ("90000 100000", False)])
def test_a_throttled_cell_refuses_a_container_without_its_device_quota(tmp_path, quota, ok):
    from devices.host_speed import HostSpeed
    from devices.speed import plan_clock

    profile = DeviceProfile(name="pi", memory=512 << 20, cpus=4, gflops=8.0)
    clock = plan_clock(profile, "device-throttled", HostSpeed(gflops_per_core=200, cores=2, cpu="t", method="t"), 2)
    fake_cgroup(tmp_path, 2, str(512 << 20), peak=0, oom_kills=0)
    (tmp_path / "cpu.max").write_text(quota)
    if ok:
        with ContainerLimit(profile, "cell", clock, mount=tmp_path):
            pass
    else:
        with pytest.raises(CapUnavailable, match="not device pi's throttle"), ContainerLimit(
            profile, "cell", clock, mount=tmp_path
        ):
            pass
