"""The README's demo: a small simulated fleet read by the fep daemon on SQLite.

`make demo` runs `python -m fep.sim.demo`: it writes a config under var/demo, starts simulated
IEC 62056-21 meters (polled over TCP, and one that pushes its readouts by itself) and DLMS/COSEM
meters (one polled over the TCP wrapper with HLS-GMAC and suite-0 ciphering, one pushing
ciphered Data-Notifications, one behind a GPRS modem that dials in, registers by IMEI, pushes
and is read over the same connection), an ANSI C12.18 meter, a DL/T 645 meter, a Modbus pulse
recorder, a DL/T 698.45 meter, a Q/GDW 1376.1 concentrator with 20 DL/T 645 meters behind it
(its point 1 read as the concentrator's, and each of the 20 read as a meter of its own
through the concentrator's AFN 10 forwarding, route gw3761:DCU-0001:port=31; with the
transformer's summary meter at point 21 they make an area whose load profiles are read
through the concentrator and balanced on stopping, `fep balance`), and two
legacy sites called by dial-up through an emulated Hayes modem on
a socat pty (left out without socat); registers
them with `fep meters import`, runs `twistd -n fep` with its status page, and prints the newest
stored readings
every few seconds with `fep readings`. Ctrl-C stops the daemon cleanly (sessions finish, the
spool is flushed into the store) and prints what was stored.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

POLLED = 3
PUSH_ADDRESS = "20000001"
# DLMS demo meters: the Green Book example keys, the simulator's default.
DLMS_EK = bytes(range(16)).hex()
DLMS_AK = bytes(range(0xD0, 0xE0)).hex()
DLMS_POLLED_TITLE = "4645505349000001"
DLMS_PUSH_TITLE = "4645505349000002"
C12_PASSWORD = "demo-c12"
DLT645_ADDRESS = "000000123456"
# A DLMS meter behind a GPRS modem that dials in, registers by its IMEI and pushes; the
# daemon also reads it over the same connection (pipe mode).
GPRS_IMEI = "356938035643809"
GPRS_TITLE = "4645505349000003"
# Legacy sites reached by dial-up through an emulated Hayes modem (needs socat for the pty).
DLT698_ADDRESS = "000000123456"
DCU_ADDRESS = "4403:0004"
# The DL/T 645 meters behind the concentrator (its PLC port 31, points 1..20), read as meters.
DCU_METERS = 20
DCU_PORT = 31
# The transformer area the concentrator's meters make: its summary meter (the transformer's,
# at point 21) measures the 20 consumers' energy and the line loss between (3 % more than
# theirs: a loss rate of 0.03 / 1.03 = 2.91 %), balanced with `fep balance`.
DCU_AREA = "T-DCU-0001"
DCU_SUMMARY = "DCU-S01"
DCU_LOSS = "0.03"
DIALUP_SITES = (("5551001", "iec", "30000001"), ("5551002", "dlt645", "000000005002"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, seconds: float = 30.0) -> bool:
    """Whether something listens on 127.0.0.1:PORT within ``seconds`` (the daemon's
    listeners, before the simulated modems dial in)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _spool_files(spool: Path) -> list[Path]:
    return [p for p in spool.glob("*") if p.is_file() and p.stat().st_size > 0]


def write_config(workdir: Path, push_port: int, period: float, dlms_push_port: int,
                 gprs_port: int, modem_pty: str | None) -> Path:
    config = workdir / "fep.ini"
    modems = (f"[modems]\nlines = m1 serial:{modem_pty}:9600:8N1\nguard = 0.2\n"
              "hangup_timeout = 2\ndial_timeout = 10\n" if modem_pty else "")
    config.write_text(
        "; written by `make demo` (fep.sim.demo)\n"
        "[fep]\nnode = demo\n"
        f"data_dir = {workdir}\n"
        f"[store]\nurl = sqlite:{workdir}/fep.sqlite\n"
        f"[collect]\nperiod = {period}\ntimeout = 5\n"
        f"[push]\niec62056_21 = tcp:{push_port}:interface=127.0.0.1\n"
        f"dlms = tcp:{dlms_push_port}:interface=127.0.0.1\n"
        f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
        + modems
        + f"[log]\njson_file = {workdir}/fep.log.json\n"
    )
    return config


def write_meters(workdir: Path, sim_port: int, dlms_port: int, c12_port: int,
                 dlt645_port: int, modbus_port: int, dialup: bool, dlt698_port: int = 1,
                 dcu_port: int = 1) -> Path:
    csv = workdir / "meters.csv"
    rows = ["id,protocol,route,address,serial,site,dlms_auth,dlms_ek,dlms_ak,"
            "dlms_server_system_title,dlms_objects,c12_password,modbus_device_map,"
            "concentrator,point"]
    for i in range(POLLED):
        address = f"{10000000 + i + 1}"
        rows.append(
            f"LGZ-{i + 1:04d},iec62056-21,tcp:host=127.0.0.1:port={sim_port},{address},"
            f"{address},demo feeder {i + 1},,,,,,,"
        )
    rows.append(
        f"PUSH-0001,iec62056-21,tcp:host=127.0.0.1:port=1,,{PUSH_ADDRESS},pushing site,,,,,,,")
    # A DLMS meter polled over the TCP wrapper with HLS-GMAC and suite-0 ciphering, and one
    # that pushes ciphered Data-Notifications, found by its system title.
    objects = "8/0.0.1.0.0.255/2;3/1.0.1.8.0.255/2;3/1.0.2.8.0.255/2;3/1.0.32.7.0.255/2"
    rows.append(
        f"DLMS-0001,dlms,tcp:host=127.0.0.1:port={dlms_port},1,,dlms over the wrapper,"
        f"high-gmac,{DLMS_EK},{DLMS_AK},{DLMS_POLLED_TITLE},\"{objects.replace(';', ',')}\",,")
    rows.append(
        f"DLMS-PUSH,dlms,tcp:host=127.0.0.1:port=1,,,dlms pushes,,{DLMS_EK},{DLMS_AK},"
        f"{DLMS_PUSH_TITLE},,,")
    # An ANSI C12.18 meter (C12.19 tables) polled over TCP, with its security password.
    rows.append(
        f"C12-0001,ansi-c12.18,tcp:host=127.0.0.1:port={c12_port},,,c12 meter,,,,,,"
        f"{C12_PASSWORD},")
    # A DL/T 645-2007 meter on a (simulated) RS-485 bus behind a TCP serial server.
    rows.append(
        f"DLT-0001,dlt645,tcp:host=127.0.0.1:port={dlt645_port},{DLT645_ADDRESS},,dlt645 meter,"
        ",,,,,,")
    # A DLMS meter behind a GPRS modem: it dials in and pushes; reads go over its connection.
    rows.append(
        f"GPRS-0001,dlms,gprs:imei={GPRS_IMEI},,,gprs modem,,{DLMS_EK},{DLMS_AK},{GPRS_TITLE},,,")
    # A two-channel pulse recorder (KYZ inputs) read over Modbus TCP.
    rows.append(
        f"PULSE-0001,modbus-pulse,tcp:host=127.0.0.1:port={modbus_port},1,,pulse recorder,"
        ",,,,,,sim-pr2")
    # A DL/T 698.45 meter over TCP, and a Q/GDW 1376.1 concentrator (its measuring point 1,
    # a DL/T 645 meter behind it).
    rows.append(
        f"D698-0001,dlt698,tcp:host=127.0.0.1:port={dlt698_port},{DLT698_ADDRESS},,"
        "dl/t 698.45 meter,,,,,,,")
    rows.append(
        f"DCU-0001,gw3761,tcp:host=127.0.0.1:port={dcu_port},{DCU_ADDRESS},,"
        "concentrator,,,,,,,")
    # The meters behind it, each read as a meter through the concentrator's forwarding.
    for n in range(1, DCU_METERS + 1):
        rows.append(f"{dcu_meter_id(n)},dlt645,gw3761:DCU-0001:port={DCU_PORT},{n:012d},,"
                    f"behind the concentrator,,,,,,,,DCU-0001,{n}")
    summary = DCU_METERS + 1
    rows.append(f"{DCU_SUMMARY},dlt645,gw3761:DCU-0001:port={DCU_PORT},{summary:012d},,"
                f"transformer area summary,,,,,,,,DCU-0001,{summary}")
    if dialup:
        for number, kind, address in DIALUP_SITES:
            protocol = "iec62056-21" if kind == "iec" else "dlt645"
            rows.append(f"DIAL-{number[-4:]},{protocol},dialup:{number},{address},,"
                        f"dial-up site,,,,,,,")
    csv.write_text("\n".join(rows) + "\n")
    return csv


def dcu_meter_id(n: int) -> str:
    """The id of the demo's meter at point ``n`` of its concentrator."""
    return f"DCU-M{n:02d}"


def write_areas(workdir: Path) -> Path:
    """The transformer area of the concentrator's meters (docs/analysis.md, areas): its
    summary meter in, the 20 consumers its members."""
    csv = workdir / "areas.csv"
    rows = ["area,name,kind,parent,meter,role,direction,phase",
            f"{DCU_AREA},Transformer area of DCU-0001,transformer,,,,,",
            f"{DCU_AREA},,,,{DCU_SUMMARY},summary,in,"]
    rows += [f"{DCU_AREA},,,,{dcu_meter_id(n)},member,,A" for n in range(1, DCU_METERS + 1)]
    csv.write_text("\n".join(rows) + "\n")
    return csv


# The area's load profiles (15-minute curves, F101), read through the concentrator every
# minute for what the store lacks of the last two days: `fep balance` needs whole days.
PROFILE_TASK = ("tasks", "add", "dcu-profile", "--kind", "load-profile", "--schedule",
                "every 1m", "--target", "route:gw3761:DCU-0001", "-o", "horizon=2d")


def balance_day(now: datetime) -> str:
    """The day the demo balances: yesterday (UTC), the last whole day."""
    return (now - timedelta(days=1)).strftime("%Y-%m-%d")


def _modem_line(workdir: Path, start: Any) -> str | None:
    """A pty pair (socat) with an emulated Hayes modem on one end, whose simulated telephone
    network reaches the dial-up sites; the daemon's modem pool opens the other end. None
    (no dial-up sites) when socat is not installed."""
    if shutil.which("socat") is None:
        print("demo: socat not found: the dial-up sites are left out")
        return None
    near, far = workdir / "modem-fep", workdir / "modem-line"
    for link in (near, far):
        link.unlink(missing_ok=True)
    start(["socat", f"pty,raw,echo=0,link={near}", f"pty,raw,echo=0,link={far}"])
    deadline = time.monotonic() + 5
    while not (near.exists() and far.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    numbers = [f"--number={number}={kind}:{address}" for number, kind, address in DIALUP_SITES]
    start([sys.executable, "-m", "fep.sim.hayes", "--pty", str(far), "--guard", "0.2",
           *numbers])
    return str(near.resolve())


def show_latest(fep: list[str], meters: list[str], since: datetime) -> None:
    for meter in meters:
        result = subprocess.run(
            [*fep, "readings", meter, "--since", since.isoformat(), "--format", "table"],
            capture_output=True, text=True,
        )
        lines = result.stdout.strip().splitlines()
        if len(lines) > 2:
            print(f"--- fep readings {meter} (last {len(lines) - 2} since {since:%H:%M:%S}Z)")
            print("\n".join(lines[:2] + lines[-6:]))
        elif result.returncode:
            print(f"--- fep readings {meter}: {result.stderr.strip()}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fep.sim.demo", description=__doc__)
    parser.add_argument("--workdir", default="var/demo")
    parser.add_argument("--period", type=float, default=5.0, help="seconds between reads")
    parser.add_argument("--show-every", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop by itself after this many seconds (0: run until Ctrl-C)")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sim_port, push_port = _free_port(), _free_port()
    dlms_port, dlms_push_port, c12_port = _free_port(), _free_port(), _free_port()
    dlt645_port, gprs_port, modbus_port = _free_port(), _free_port(), _free_port()
    children: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def start(cmd: list[str]) -> subprocess.Popen[bytes]:
        # Own process group: Ctrl-C reaches the demo, which stops each child in order.
        child = subprocess.Popen(cmd, env=env, start_new_session=True)
        children.append(child)
        return child

    modem_pty = _modem_line(workdir, start)
    config = write_config(workdir, push_port, args.period, dlms_push_port, gprs_port,
                          modem_pty)
    dlt698_port, dcu_port = _free_port(), _free_port()
    meters_csv = write_meters(workdir, sim_port, dlms_port, c12_port, dlt645_port,
                              modbus_port, modem_pty is not None, dlt698_port, dcu_port)
    # The operator web server (status page, API, metrics; docs/operators.md), loopback only.
    http_port, token = _free_port(), secrets.token_hex(16)
    from fep.operator.tokens import token_line

    tokens = workdir / "api.tokens"  # the token's hash only, readable by its owner only
    tokens.write_text(token_line("demo", "operator", token) + "\n")
    tokens.chmod(0o600)
    with open(config, "a", encoding="utf-8") as f:
        f.write(f"[http]\nport = {http_port}\ntokens_file = {workdir.resolve()}/api.tokens\n")
    # The daemon's configuration: its store, and its master key (DATA_DIR/master.key, made
    # by the import) for the meters' keys and passwords.
    fep = [sys.executable, "-m", "fep.cli", "--config", str(config)]

    print(f"demo: simulated meters on 127.0.0.1:{sim_port}, push listener on {push_port}")
    start([sys.executable, "-m", "fep.sim.iec62056_21", "--tcp", str(sim_port),
           "--meters", str(POLLED)])
    start([sys.executable, "-m", "fep.sim.dlms", "--tcp", str(dlms_port),
           "--system-title", DLMS_POLLED_TITLE, "--serial", "FEP0000001"])
    start([sys.executable, "-m", "fep.sim.ansi_c12", "--tcp", str(c12_port),
           "--password", C12_PASSWORD])
    start([sys.executable, "-m", "fep.sim.dlt645", "--port", str(dlt645_port),
           "--address", DLT645_ADDRESS])
    start([sys.executable, "-m", "fep.sim.pulse_recorder", "--port", str(modbus_port),
           "--interface", "127.0.0.1"])
    start([sys.executable, "-m", "fep.sim.dlt698", "--port", str(dlt698_port),
           "--interface", "127.0.0.1", "--address", DLT698_ADDRESS])
    start([sys.executable, "-m", "fep.sim.concentrator", "--port", str(dcu_port),
           "--interface", "127.0.0.1", "--address", DCU_ADDRESS, "--meters", str(DCU_METERS),
           "--summary-loss", DCU_LOSS])
    subprocess.run([*fep, "db", "upgrade"], check=True, env=env)
    subprocess.run([*fep, "meters", "import", str(meters_csv)], check=True, env=env)
    subprocess.run([*fep, "areas", "import", str(write_areas(workdir))], check=True, env=env)
    subprocess.run([*fep, *PROFILE_TASK], check=True, env=env, stdout=subprocess.DEVNULL)
    daemon = start([_bin("twistd"), "--nodaemon", "--pidfile=", "--logfile=-", "fep",
                    "--config", str(config)])
    print(f"demo: status page http://127.0.0.1:{http_port}/status#token={token}")
    start([sys.executable, "-m", "fep.sim.iec62056_21", "--push",
           f"tcp:host=127.0.0.1:port={push_port}", "--every", str(args.period),
           "--first-address", PUSH_ADDRESS])
    start([sys.executable, "-m", "fep.sim.dlms", "--push",
           f"tcp:host=127.0.0.1:port={dlms_push_port}", "--every", str(args.period),
           "--system-title", DLMS_PUSH_TITLE, "--serial", "FEP0000002"])
    if not _wait_for_port(gprs_port):
        print(f"demo: the daemon's GPRS listener on {gprs_port} did not open")
    start([sys.executable, "-m", "fep.sim.gprs_modem", "--connect",
           f"tcp:host=127.0.0.1:port={gprs_port}", "--imei", GPRS_IMEI, "--meter", "dlms",
           "--system-title", GPRS_TITLE, "--every", str(args.period)])

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    next_show = started + args.show_every
    meter_ids = [f"LGZ-{i + 1:04d}" for i in range(POLLED)] + [
        "PUSH-0001", "DLMS-0001", "DLMS-PUSH", "C12-0001", "DLT-0001", "GPRS-0001",
        "PULSE-0001", dcu_meter_id(1), dcu_meter_id(DCU_METERS)]
    if modem_pty:
        meter_ids += [f"DIAL-{number[-4:]}" for number, _, _ in DIALUP_SITES]
    while not stop and daemon.poll() is None:
        time.sleep(0.2)
        if time.monotonic() >= next_show:
            next_show += args.show_every
            show_latest(fep, meter_ids, datetime.now(UTC) - timedelta(seconds=args.show_every))
        if args.duration and time.monotonic() - started > args.duration:
            stop = True

    print("demo: stopping the fep daemon (SIGINT: clean shutdown, spool flushed)")
    code = 0
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGINT)
        try:
            code = daemon.wait(timeout=60)
            if code == -signal.SIGINT:
                code = 0  # twistd re-raises the signal after its clean shutdown
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = 1
    else:
        code = daemon.returncode or 1
        print(f"demo: the daemon exited by itself with status {code}")
    for child in children:
        if child.poll() is None:
            child.terminate()
            child.wait(timeout=10)

    with sqlite3.connect(workdir / "fep.sqlite") as conn:
        rows = conn.execute(
            "SELECT meter, count(*) FROM readings GROUP BY meter ORDER BY meter").fetchall()
    for meter, count in rows:
        print(f"demo: {meter}: {count} readings stored")
    # The transformer area's energy balance of yesterday, from the curves read through the
    # concentrator (the first profile run starts within a minute of the start).
    day = balance_day(datetime.now(UTC))
    print(f"demo: fep balance --day {day} --area {DCU_AREA}")
    subprocess.run([*fep, "balance", "--day", day, "--area", DCU_AREA, "--format", "table"],
                   env=env)
    left = _spool_files(workdir / "spool")
    print(f"demo: spool files left unflushed: {len(left)}")
    print(f"demo: daemon exit status {code}")
    return 0 if code == 0 and not left else 1


if __name__ == "__main__":
    sys.exit(main())
