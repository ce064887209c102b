"""`scripts/testbed bmc-serve hN`: the part of host hN's BMC that ipmi_sim does not do, so that the
manager's redfish and wol power drivers meet a real protocol. One process, started by bmc.start_bmc
right after ipmi_sim in the host's network namespace and the BMC's cgroup (power off spares it):

- Redfish over HTTPS on the host's address, port 443 (DIR/hN/bmc/redfish.crt, self-signed), HTTP
  Basic authentication as admin with the test bed's BMC password. GET /redfish/v1/ (the service
  root) needs none. /redfish/v1/Systems has one member, /redfish/v1/Systems/1, whose PowerState
  says whether the host is on, and whose ComputerSystem.Reset action (POST {"ResetType": ...})
  switches the power: On, ForceOff, GracefulShutdown, ForceRestart, PowerCycle (reset_host).
- Wake-on-LAN on UDP port 9 (0.0.0.0): a magic packet for the MAC of the host's eth0 switches the
  host on when it is off.

Both switch the power in this process, through power.py, as the BMC's chassis_control does. Errors
answer with Redfish's error body ({"error": {"code": "Base.1.8.X", "message": ...}}); a request
that fails in any way is answered (or dropped) without taking the server down, and every connection
has a timeout so a slow client holds one thread, not the server. Each action is logged to
DIR/hN/bmc/bmc-serve.log.
"""

import base64
import ctypes
import hmac
import http.server
import json
import socket
import socketserver
import ssl
import threading
import time
import traceback

from .bmc import BMC_USER, REDFISH_CERT, REDFISH_KEY, REDFISH_PORT, SERVE_COMM, WOL_PORT, bmc_password
from .power import cut_power, is_on, power_on, reap_children, soft_off
from .process import log

PR_SET_NAME = 15  # prctl(2)
CONNECTION_TIMEOUT_S = 10  # TLS handshake, request line, headers and body each get this long
MAX_BODY = 64 * 1024
MAX_WOL_PAYLOAD = 1024
REGISTRY = "Base.1.8"  # Redfish's Base message registry, the ids of error bodies
SYSTEM = "/redfish/v1/Systems/1"
RESET_TARGET = f"{SYSTEM}/Actions/ComputerSystem.Reset"
RESET_TYPES = ("On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle")


def set_comm(name):
    """Sets this process's /proc/PID/comm to NAME (prctl PR_SET_NAME): a Python program is called
    after its script (`testbed`, the power supply's name), and pid files are checked by that name."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) != 0:
        log(f"warning: prctl(PR_SET_NAME, {name}) failed: errno {ctypes.get_errno()}")


class RedfishError(Exception):
    """An answer other than success: HTTP STATUS with Redfish's error body, registry message ID."""

    def __init__(self, status, message_id, message, headers=()):
        super().__init__(message)
        self.status = status
        self.message_id = message_id
        self.message = message
        self.headers = tuple(headers)


def error_body(message_id, message):
    """Redfish's error response (DSP0266 "Error responses"): the code and one extended message."""
    code = f"{REGISTRY}.{message_id}"
    return {"error": {"code": code, "message": message,
                      "@Message.ExtendedInfo": [{"@odata.type": "#Message.v1_1_1.Message", "MessageId": code,
                                                 "Message": message, "Severity": "Critical"}]}}


# ---- resources ----------------------------------------------------------------------------------

def service_root(host):
    return {"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot", "Id": "RootService",
            "Name": f"uw-{host.name} BMC", "RedfishVersion": "1.8.0", "UUID": host.uuid(),
            "Systems": {"@odata.id": "/redfish/v1/Systems"}}


def systems(host):
    return {"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Name": "Computer System Collection", "Members": [{"@odata.id": SYSTEM}], "Members@odata.count": 1}


def system(host):
    return {"@odata.id": SYSTEM, "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem", "Id": "1",
            "Name": f"uw-{host.name}", "UUID": host.uuid(), "PowerState": "On" if is_on(host) else "Off",
            "Actions": {"#ComputerSystem.Reset": {"target": RESET_TARGET,
                                                  "ResetType@Redfish.AllowableValues": list(RESET_TYPES)}}}


# Path (without a trailing slash) -> (its GET handler or None, whether it needs no authentication).
RESOURCES = {
    "/redfish": (lambda host: {"v1": "/redfish/v1/"}, True),
    "/redfish/v1": (service_root, True),
    "/redfish/v1/Systems": (systems, False),
    SYSTEM: (system, False),
    RESET_TARGET: (None, False),  # POST only
}


def reset_host(host, reset_type):
    """ComputerSystem.Reset: switches HOST's power as RESET_TYPE says (one of RESET_TYPES). On and
    GracefulShutdown return at once (the boot or the shutdown goes on), the others once the power
    is off (and on again)."""
    log(f"BMC of {host.name}: Redfish reset {reset_type}")
    if reset_type == "On":
        power_on(host)
    elif reset_type == "ForceOff":
        cut_power(host)
    elif reset_type == "GracefulShutdown":
        soft_off(host)
    elif reset_type == "ForceRestart":
        if is_on(host):
            cut_power(host)
            power_on(host)
    elif reset_type == "PowerCycle":
        cut_power(host)
        power_on(host)


def reset_type_of(body):
    """The ResetType of a Reset action's request BODY (bytes). RedfishError 400 when the body is not
    a JSON object or the ResetType is missing or not one of RESET_TYPES."""
    action = "ComputerSystem.Reset"
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RedfishError(400, "MalformedJSON", f"The request body submitted was malformed JSON and could not be "
                                                 f"parsed by the receiving service: {e}.") from None
    if not isinstance(request, dict):
        raise RedfishError(400, "MalformedJSON", "The request body must be a JSON object.")
    if "ResetType" not in request:
        raise RedfishError(400, "ActionParameterMissing",
                           f"The action {action} requires the parameter ResetType to be present in the request body.")
    value = request["ResetType"]
    if not isinstance(value, str):
        raise RedfishError(400, "ActionParameterValueTypeError",
                           f"The value {json.dumps(value)} for the parameter ResetType in the action {action} is of "
                           f"a different type than the parameter can accept (a string).")
    if value not in RESET_TYPES:
        raise RedfishError(400, "ActionParameterValueNotInList",
                           f"The value {json.dumps(value)} for the parameter ResetType in the action {action} is "
                           f"not in the list of acceptable values: {', '.join(RESET_TYPES)}.")
    return value


# ---- HTTPS --------------------------------------------------------------------------------------

class RedfishHandler(http.server.BaseHTTPRequestHandler):
    """One connection to the Redfish service (HTTP/1.1, keep-alive). The server holds the host and
    the credentials. Every answer but 204 has a JSON body; errors have Redfish's error body."""

    protocol_version = "HTTP/1.1"
    server_version = "uw-testbed-bmc"
    timeout = CONNECTION_TIMEOUT_S

    def version_string(self):
        return self.server_version

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.answer()

    def __getattr__(self, name):
        """Every other method (PUT, PATCH, DELETE, ...) goes through answer() too, which refuses it
        with 405 on a known path: http.server would answer 501 for a method without a do_ method."""
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def answer(self):
        """Authenticates, routes, runs the request and answers; no exception gets out."""
        host = self.server.host
        try:
            status, body = self.route(host)
        except RedfishError as e:
            self.send_json(e.status, error_body(e.message_id, e.message), e.headers)
            return
        except Exception as e:  # a bug or a failed power switch: answer it, keep serving
            log(f"BMC of {host.name}: {self.command} {self.path} failed: {e}\n{traceback.format_exc().rstrip()}")
            self.close_connection = True
            self.send_json(500, error_body("InternalError", f"The request failed in the BMC: {e}."))
            return
        self.send_json(status, body)

    def route(self, host):
        """(status, body or None) of this request; RedfishError for every refusal."""
        path = self.path.split("?", 1)[0].split("#", 1)[0].rstrip("/") or "/"
        get, public = RESOURCES.get(path, (None, False))
        if not (public and self.command in ("GET", "HEAD")):
            self.authenticate(host)
        if path not in RESOURCES:
            self.discard_body()
            raise RedfishError(404, "ResourceMissingAtURI", f"The resource at the URI {path} was not found.")
        allowed = "POST" if path == RESET_TARGET else "GET, HEAD"
        if self.command not in allowed.split(", "):
            self.discard_body()
            raise RedfishError(405, "GeneralError", f"{self.command} is not allowed on {path}; allowed: {allowed}.",
                               [("Allow", allowed)])
        if get is not None:
            self.discard_body()
            return 200, get(host)
        reset_host(host, reset_type_of(self.read_body()))
        return 204, None

    def authenticate(self, host):
        """HTTP Basic with the BMC's user and password; RedfishError 401 otherwise."""
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True) if scheme.lower() == "basic" else b""
        except ValueError:
            given = b""
        if not hmac.compare_digest(given, self.server.credentials):
            self.discard_body()
            why = "wrong user or password" if given else "no HTTP Basic credentials"
            raise RedfishError(401, "NoValidSession",
                               f"There is no valid session established with the implementation ({why}).",
                               [("WWW-Authenticate", f'Basic realm="uw-{host.name}"')])

    def body_length(self):
        """The request's Content-Length (0 without one). RedfishError 400 for chunked bodies, a bad
        or too large length; the connection closes then (the body stays unread)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RedfishError(400, "GeneralError", "Chunked request bodies are not supported: send Content-Length.")
        text = (self.headers.get("Content-Length") or "0").strip()
        if not text.isdigit():
            self.close_connection = True
            raise RedfishError(400, "GeneralError", f"Bad Content-Length {text!r}.")
        if int(text) > MAX_BODY:
            self.close_connection = True
            raise RedfishError(400, "GeneralError", f"The request body ({text} bytes) is larger than the BMC "
                                                    f"accepts ({MAX_BODY} bytes).")
        return int(text)

    def read_body(self):
        return self.rfile.read(self.body_length())

    def discard_body(self):
        """Reads and drops a refused request's body, so the connection can carry the next request;
        one that cannot be read closes the connection instead."""
        try:
            self.read_body()
        except RedfishError:
            pass

    def send_json(self, status, body, headers=()):
        """Answers STATUS with BODY as JSON (no body for 204 or HEAD) and HEADERS."""
        data = b"" if body is None else json.dumps(body).encode() + b"\n"
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("OData-Version", "4.0")
        self.send_header("Cache-Control", "no-store")
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if status != 204 and self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, headers too long, a bad version) in
        Redfish's error body instead of HTML."""
        self.close_connection = True
        try:
            self.send_json(code, error_body("GeneralError", message or self.responses.get(code, ("Error",))[0]))
        except OSError:
            pass

    def log_message(self, format, *args):
        log(f"BMC of {self.server.host.name}: {self.client_address[0]} {format % args}")


class RedfishServer(http.server.ThreadingHTTPServer):
    """The Redfish service of HOST on ADDRESS:PORT: a thread per connection, TLS set up in that
    thread (a client that never finishes its handshake holds its own thread only, until the
    connection's timeout)."""

    daemon_threads = True

    def __init__(self, host, address, port, tls, credentials):
        self.host = host
        self.tls = tls
        self.credentials = credentials
        super().__init__((address, port), RedfishHandler)

    def server_bind(self):
        """Binds without HTTPServer's reverse DNS lookup of the address (no resolver in a host)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        """Runs in the connection's thread: the TLS handshake, then the handler."""
        request.settimeout(CONNECTION_TIMEOUT_S)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            log(f"BMC of {self.host.name}: TLS handshake with {client_address[0]} failed: {e}")
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()

    def handle_error(self, request, client_address):
        log(f"BMC of {self.host.name}: connection from {client_address[0]} failed: "
            f"{traceback.format_exc().rstrip()}")


def tls_context(host):
    """TLS 1.2+ server context with the BMC's certificate (bmc.make_certificate)."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(host.file(f"bmc/{REDFISH_CERT}"), host.file(f"bmc/{REDFISH_KEY}"))
    return tls


# ---- Wake-on-LAN --------------------------------------------------------------------------------

def magic_packet_mac(payload):
    """The MAC (bytes) a Wake-on-LAN magic packet in PAYLOAD wakes: 6 bytes 0xFF, then 16 times the
    MAC, anywhere in the payload (a SecureOn password may follow); None when there is none."""
    start = payload.find(b"\xff" * 6)
    while start != -1:
        mac = payload[start + 6:start + 12]
        if len(mac) == 6 and payload[start + 6:start + 102] == mac * 16:
            return mac
        start = payload.find(b"\xff" * 6, start + 1)
    return None


def mac_text(mac):
    return ":".join(f"{b:02x}" for b in mac)


def wake(host, own_mac, payload, sender):
    """Handles one datagram: powers HOST on when it is a magic packet for OWN_MAC (bytes) and the
    host is off; logs what it did or why it did nothing."""
    who = f"BMC of {host.name}: Wake-on-LAN from {sender}"
    if len(payload) > MAX_WOL_PAYLOAD:
        log(f"{who}: {len(payload)} bytes, more than a magic packet's {MAX_WOL_PAYLOAD}: ignored")
        return
    mac = magic_packet_mac(payload)
    if mac is None:
        log(f"{who}: not a magic packet ({len(payload)} bytes): ignored")
    elif mac != own_mac:
        log(f"{who}: magic packet for {mac_text(mac)}, not this host's {mac_text(own_mac)}: ignored")
    elif is_on(host):
        log(f"{who}: magic packet for {mac_text(mac)}: the host is on already")
    else:
        log(f"{who}: magic packet for {mac_text(mac)}: power on")
        power_on(host)


def serve_wol(host, sock, own_mac):
    """The Wake-on-LAN thread: every datagram on SOCK (UDP 9), forever. It also reaps this process's
    children: the power supplies power_on started here (nothing else here waits for a child once the
    servers run), so a supply that was switched off does not stay a zombie."""
    sock.settimeout(1)
    while True:
        reap_children()
        try:
            payload, sender = sock.recvfrom(MAX_WOL_PAYLOAD + 1)
        except socket.timeout:
            continue
        try:
            wake(host, own_mac, payload, sender[0])
        except Exception as e:  # a failed power on: log it, keep listening
            log(f"BMC of {host.name}: Wake-on-LAN failed: {e}\n{traceback.format_exc().rstrip()}")
            time.sleep(0.1)


# ---- the process --------------------------------------------------------------------------------

def run_bmc_serve(host):
    """`scripts/testbed bmc-serve hN`, in host hN's network namespace: binds HTTPS on the host's
    address, port 443, and UDP 0.0.0.0:9, then serves both until it is stopped (SIGTERM)."""
    set_comm(SERVE_COMM)
    own_mac = bytes.fromhex(host.mac().replace(":", ""))  # before any child: see serve_wol
    credentials = f"{BMC_USER}:{bmc_password(host.testbed)}".encode()
    server = RedfishServer(host, host.address, REDFISH_PORT, tls_context(host), credentials)
    wol = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wol.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    wol.bind(("0.0.0.0", WOL_PORT))
    threading.Thread(target=serve_wol, args=(host, wol, own_mac), name="wol", daemon=True).start()
    log(f"BMC of {host.name}: Redfish on https://{host.address}:{REDFISH_PORT}, Wake-on-LAN on UDP {WOL_PORT} "
        f"for {mac_text(own_mac)}")
    server.serve_forever()
    return 0
