"""Reading and writing nets and solvers: text prototxt or binary, upgraded, with source lines.

Reading a net (:func:`read_net`, :func:`read_net_with_lines`) parses the file, text or binary,
then runs every legacy upgrade pass (:mod:`protonet.io.upgrade`), as Caffe's
``ReadNetParamsFrom{Text,Binary}FileOrDie`` do. The ``_with_lines`` forms also return, for each
entry of ``net.layer``, the line where its ``layer {`` / ``layers {`` block opens (``None`` for
binary files and for layers the upgrade made up), so that later stages can say ``file:line``.

Parse errors are :class:`ProtonetError` with the file, the line, and a message that starts with
the column: ``models/x.prototxt:12: column 5: unknown field 'ceil_mode' in PoolingParameter
(...)``.

**Lenient mode** (``lenient=True``) loads files written for Caffe forks: an unknown field is
dropped with one warning, unless it has a BVLC equivalent in :data:`FORK_FIELD_MAPPINGS`
(``ceil_mode`` → ``round_mode``), which is rewritten instead. It works on the text: parse,
find the offending field at the line and column the parser reports, blank it out (keeping
every newline, so line numbers stay right) and parse again, until the file parses. Unknown
layer *types* are not this module's business: the graph builder reports them.
"""

import bisect
import difflib
import os
import re
from collections import namedtuple

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from ..errors import ProtonetError
from ..log import get_logger
from ..proto import caffe_pb2
from .blobproto import check_utf8
from .files import atomic_write_bytes
from .upgrade import (net_needs_upgrade, run_net_upgrades, solver_needs_upgrade,
                      upgrade_snapshot_prefix, upgrade_solver)

log = get_logger(__name__)

# Extensions of files that are binary protobuf unless their content says otherwise.
BINARY_EXTENSIONS = frozenset({".caffemodel", ".pb", ".binaryproto"})

_BOOL_SPELLINGS = {"true": True, "t": True, "True": True, "1": True,
                   "false": False, "f": False, "False": False, "0": False}

# Fork fields with a BVLC equivalent: (message, field) → (BVLC field, {fork value: BVLC value}).
FORK_FIELD_MAPPINGS = {
    ("PoolingParameter", "ceil_mode"): ("round_mode", {True: "CEIL", False: "FLOOR"}),
}

# Fields that real files carry from well-known Caffe forks (for a better error message only;
# lenient mode drops every unknown field, listed here or not).
FORK_FIELDS = frozenset({
    ("PoolingParameter", "ceil_mode"),
    ("DataParameter", "shuffle"),
    ("ConvolutionParameter", "hole"),
    ("TransformationParameter", "resize_param"),
    ("TransformationParameter", "distort_param"),
    ("TransformationParameter", "expand_param"),
    ("TransformationParameter", "noise_param"),
    ("TransformationParameter", "emit_constraint"),
})


# ---------------------------------------------------------------------------------------------
# A small tokenizer for protobuf text format: enough to find fields, blocks and line numbers.
# ---------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<word>[\w.+-]+)
    | (?P<punct>.)
""", re.VERBOSE)

_Token = namedtuple("_Token", "kind text start end")
_OPEN = {"{": "}", "<": ">", "[": "]"}
_CLOSE = frozenset(_OPEN.values())


def _tokens(text, start=0):
    """Significant tokens (no whitespace or comments) of ``text`` from offset ``start``."""
    for match in _TOKEN_RE.finditer(text, start):
        if match.lastgroup not in ("space", "comment"):
            yield _Token(match.lastgroup, match.group(), match.start(), match.end())


class _LineIndex:
    """Offsets ↔ 1-based line numbers (and columns) of one text."""

    def __init__(self, text):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, offset):
        return bisect.bisect_right(self.starts, offset)

    def offset(self, line, column):
        return self.starts[line - 1] + column - 1


def _top_level_fields(text):
    """``[(name, line), ...]`` for every field of the outermost message, in order."""
    index = _LineIndex(text)
    fields = []
    depth = 0
    after_colon = False
    for token in _tokens(text):
        if token.kind == "punct" and token.text in _OPEN:
            depth += 1
        elif token.kind == "punct" and token.text in _CLOSE:
            depth -= 1
        elif depth == 0 and token.kind == "word" and not after_colon:
            fields.append((token.text, index.line(token.start)))
        after_colon = token.text == ":" and token.kind == "punct"
    return fields


def _field_end(tokens):
    """End offset of a field whose name was just consumed from the ``tokens`` iterator.

    Handles ``name: scalar``, ``name: "adjacent" "strings"``, ``name { ... }``,
    ``name: < ... >`` and ``name: [ ... ]``, plus a trailing ``;`` or ``,``. ``None`` if the text
    ends first.
    """
    token = next(tokens, None)
    if token is not None and token.text == ":":
        token = next(tokens, None)
    if token is None:
        return None
    if token.text in _OPEN and token.kind == "punct":
        end = _block_end(tokens)
    elif token.text == "-":   # "- 5": a sign token apart from its number
        number = next(tokens, None)
        end = number.end if number is not None else None
    else:
        end = token.end
    if end is None:
        return None
    follower = next(tokens, None)
    while follower is not None and token.kind == "string" and follower.kind == "string":
        end, follower = follower.end, next(tokens, None)
    if follower is not None and follower.text in (";", ","):
        end = follower.end
    return end


def _block_end(tokens):
    """End offset of the block whose opening bracket was just consumed (nested blocks of any
    bracket kind)."""
    depth = 1
    for token in tokens:
        if token.kind != "punct":
            continue
        if token.text in _OPEN:
            depth += 1
        elif token.text in _CLOSE:
            depth -= 1
            if depth == 0:
                return token.end
    return None


def _blank(span):
    """``span`` with everything but newlines turned into spaces (lines and columns stay put)."""
    return re.sub(r"[^\n]", " ", span)


# ---------------------------------------------------------------------------------------------
# Parse errors
# ---------------------------------------------------------------------------------------------

_UNKNOWN_FIELD_RE = re.compile(r'Message type "caffe\.([\w.]+)" has no field named "(\w+)"')


def _unknown_field_hint(message_name, field_name):
    mapping = FORK_FIELD_MAPPINGS.get((message_name, field_name))
    if mapping is not None:
        return (f"this field comes from a Caffe fork; BVLC's equivalent is {mapping[0]}; rerun "
                "with --lenient to map it")
    if (message_name, field_name) in FORK_FIELDS:
        return "this field comes from a Caffe fork; rerun with --lenient to drop it"
    descriptor = getattr(caffe_pb2, message_name.split(".")[0], None)
    for part in message_name.split(".")[1:]:
        descriptor = getattr(descriptor, part, None)
    known = list(descriptor.DESCRIPTOR.fields_by_name) if descriptor is not None else []
    close = difflib.get_close_matches(field_name, known, n=1)
    if close:
        return f"did you mean '{close[0]}'? or rerun with --lenient to drop it"
    owners = [name for name, message in caffe_pb2.DESCRIPTOR.message_types_by_name.items()
              if field_name in message.fields_by_name and not name.startswith(("V0", "V1"))]
    if owners:
        return (f"BVLC Caffe has it in {', '.join(sorted(owners))} only; rerun with --lenient "
                "to drop it")
    return "BVLC Caffe has no such field; rerun with --lenient to drop it"


def _explain_unknown_field(match, text):
    message_name, field_name = match.groups()
    return (f"unknown field '{field_name}' in {message_name} "
            f"({_unknown_field_hint(message_name, field_name)})")


def _explain_enum(match, text):
    enum_name, value = match.groups()
    enum_type = caffe_pb2.DESCRIPTOR.message_types_by_name.get(enum_name.split(".")[0])
    choices = []
    if enum_type is not None and "." in enum_name:
        enum = enum_type.enum_types_by_name.get(enum_name.split(".")[1])
        choices = [v.name for v in enum.values] if enum is not None else []
    expected = f"; expected one of {', '.join(choices)}" if choices else ""
    return f"unknown value '{value}' for {enum_name}{expected}"


_KINDS = {"integer": "an integer", "float": "a number", "string": "a string"}

def _explain_unclosed(text):
    stack = []
    for token in _tokens(text):
        if token.kind == "punct" and token.text in _OPEN:
            stack.append(token.start)
        elif token.kind == "punct" and token.text in _CLOSE and stack:
            stack.pop()
    if not stack:
        return "expected '}': a block is not closed (unbalanced braces)"
    opened = _LineIndex(text).line(stack[-1])
    return f"expected '}}': the block opened on line {opened} is never closed (unbalanced braces)"


# Python's text_format messages → ours: (pattern, explain(match, text) -> message); first match
# wins.
_PARSE_ERROR_RULES = (
    (_UNKNOWN_FIELD_RE, _explain_unknown_field),
    (re.compile(r'Enum type "caffe\.([\w.]+)" has no value named (\S+?)\.?$'), _explain_enum),
    (re.compile(r"Couldn't parse (integer|float|string): (.*)"),
     lambda m, text: f"bad value {m.group(2)}: expected {_KINDS[m.group(1)]}"),
    (re.compile(r"String missing ending quote: (.*)"),
     lambda m, text: f"string {m.group(1)} is missing its closing quote"),
    (re.compile(r'Expected "true" or "false"'),
     lambda m, text: "bad value: expected true or false"),
    (re.compile(r"Expected string but found: (.*)"),
     lambda m, text: f"expected a string in quotes but found {m.group(1)}"),
    (re.compile(r"Value out of range: (.*)"),
     lambda m, text: f"value {m.group(1)} is out of range for this field"),
    (re.compile(r'Message type "caffe\.([\w.]+)" should not have multiple "(\w+)" fields'),
     lambda m, text: f"field '{m.group(2)}' given more than once in {m.group(1)} "
                     "(it takes one value)"),
    (re.compile(r'Expected "\}"'), lambda m, text: _explain_unclosed(text)),
    (re.compile(r"Expected identifier or number, got \}"),
     lambda m, text: "unexpected '}': there is no block to close here (unbalanced braces)"),
    (re.compile(r"Expected identifier or number, got (.*?)\.?$"),
     lambda m, text: f"expected a field name, found {m.group(1)}"),
)


def _translate_parse_error(err, text, filename):
    """A text_format.ParseError → ProtonetError(file, line, "column N: what was wrong")."""
    line, column = err.GetLine(), err.GetColumn()
    message = str(err)
    message = re.sub(r"^\d+:\d+ : ", "", message)
    lines = text.split("\n")
    if line is not None and 1 <= line <= len(lines):
        quoted = f"'{lines[line - 1]}': "
        if message.startswith(quoted):
            message = message[len(quoted):]
    for pattern, explain in _PARSE_ERROR_RULES:
        match = pattern.search(message)
        if match:
            message = explain(match, text)
            break
    where = f"column {column}: " if column is not None else ""
    return ProtonetError(f"{where}{message}", file=filename, line=line)


# ---------------------------------------------------------------------------------------------
# Lenient mode
# ---------------------------------------------------------------------------------------------

def _fix_unknown_field(text, err, match, filename):
    """``text`` with the unknown field ``err`` reports dropped (or mapped); ``None`` if the field
    cannot be found where the parser says it is."""
    message_name, field_name = match.groups()
    line, column = err.GetLine(), err.GetColumn()
    index = _LineIndex(text)
    if line is None or column is None or line > len(index.starts):
        return None
    start = index.offset(line, column)
    tokens = _tokens(text, start)
    name = next(tokens, None)
    if name is None or name.start != start or name.text != field_name:
        return None
    end = _field_end(tokens)
    if end is None:
        return None
    span = text[start:end]
    replacement = _mapped_field(message_name, field_name, span, filename, line)
    if replacement is None:
        log.warning("%s:%d: dropping unknown field '%s' in %s", filename, line, field_name,
                    message_name)
        replacement = _blank(span)
    return text[:start] + replacement + text[end:]


def _mapped_field(message_name, field_name, span, filename, line):
    """The BVLC text replacing fork field ``span``, keeping its newlines; ``None`` to drop it."""
    mapping = FORK_FIELD_MAPPINGS.get((message_name, field_name))
    if mapping is None:
        return None
    target, values = mapping
    words = [token.text for token in _tokens(span) if token.kind == "word"]
    value_token = words[1] if len(words) == 2 else None
    value = values.get(_BOOL_SPELLINGS.get(value_token))
    if value is None:
        return None
    mapped = f"{target}: {value}"
    log.warning("%s:%d: mapping field '%s: %s' in %s (from a Caffe fork) to BVLC's '%s'",
                filename, line, field_name, value_token, message_name, mapped)
    newlines = span.count("\n")
    return mapped + "\n" * newlines if newlines else mapped.ljust(len(span))


def _parse_text(text, message, *, filename, lenient):
    """Parse ``text`` into ``message`` (cleared first); return the text that parsed (lenient
    mode may have blanked fields out of it)."""
    while True:
        message.Clear()   # a failed Parse leaves what it had read so far
        try:
            text_format.Parse(text, message)
            return text
        except text_format.ParseError as err:
            match = _UNKNOWN_FIELD_RE.search(str(err)) if lenient else None
            fixed = _fix_unknown_field(text, err, match, filename) if match else None
            if fixed is None:
                raise _translate_parse_error(err, text, filename) from None
            text = fixed


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ProtonetError(f"cannot read: {err.strerror}", file=os.fspath(path)) from None


def _as_text(data):
    """``data`` decoded as UTF-8 if it looks like a text file, else ``None``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if re.search(r"[\x00-\x08\x0e-\x1f]", text):
        return None
    return text


def _load(path, message_type, *, lenient):
    """Parse ``path`` into a fresh ``message_type``: ``(message, text)``, ``text`` being
    ``None`` when the file was binary.

    Files named ``.caffemodel``/``.pb``/``.binaryproto`` are tried as binary first, others as
    text; a file whose bytes are not text is read as binary whatever its name.
    """
    filename = os.fspath(path)
    data = _read_bytes(path)
    text = _as_text(data)
    message = message_type()
    if text is None or os.path.splitext(filename)[1].lower() in BINARY_EXTENSIONS:
        try:
            message.ParseFromString(data)
            check_utf8(message, filename)
            return message, None
        except DecodeError as err:
            if text is None:
                raise ProtonetError(f"not a binary {message_type.DESCRIPTOR.name} ({err}) and "
                                    "not a text file either", file=filename) from None
            log.warning("%s: not a binary %s (%s); reading it as text", filename,
                        message_type.DESCRIPTOR.name, err)
    text = _parse_text(text, message, filename=filename, lenient=lenient)
    return message, text


def _upgrade_with_lines(net, text, filename):
    """Upgrade ``net`` (parsed from ``text``, or binary if ``None``); return its layer lines."""
    layer_lines = None
    input_line = None
    if text is not None:
        fields = _top_level_fields(text)
        list_name = "layers" if len(net.layers) else "layer"
        layer_lines = [line for name, line in fields if name == list_name]
        input_line = next((line for name, line in fields if name == "input"), None)
    report = run_net_upgrades(net, source=filename, layer_lines=layer_lines,
                              input_line=input_line)
    return report.layer_lines


def read_net_with_lines(path, *, lenient=False):
    """Read and upgrade a net file: ``(NetParameter, lines)``.

    ``lines[i]`` is the source line of ``net.layer[i]`` (``None`` for binary files and for the
    Input layer made from a file's ``input`` fields when the line is unknown).
    """
    filename = os.fspath(path)
    net, text = _load(filename, caffe_pb2.NetParameter, lenient=lenient)
    return net, _upgrade_with_lines(net, text, filename)


def read_net(path, *, lenient=False):
    """Read a net file (text prototxt or binary caffemodel) and upgrade it to the current
    format."""
    return read_net_with_lines(path, lenient=lenient)[0]


def parse_net_text_with_lines(text, *, filename="<string>", lenient=False):
    """Parse and upgrade prototxt ``text``: ``(NetParameter, lines)`` as
    :func:`read_net_with_lines`."""
    net = caffe_pb2.NetParameter()
    text = _parse_text(text, net, filename=filename, lenient=lenient)
    return net, _upgrade_with_lines(net, text, filename)


def parse_net_text(text, *, filename="<string>", lenient=False):
    """Parse and upgrade prototxt ``text``; ``filename`` is only used in messages."""
    return parse_net_text_with_lines(text, filename=filename, lenient=lenient)[0]


def _upgrade_solver(solver, text, filename):
    """upgrade_solver, with the line of ``solver_type`` added to its error."""
    try:
        upgrade_solver(solver, source=filename)
    except ProtonetError as err:
        fields = _top_level_fields(text) if text is not None else []
        raise err.with_context(line=next((line for name, line in fields
                                          if name == "solver_type"), None))


def parse_solver_text(text, *, filename="<string>", lenient=False):
    """Parse solver prototxt ``text`` and upgrade its ``solver_type`` (no snapshot_prefix
    normalisation: that needs the solver's path, see :func:`read_solver`)."""
    solver = caffe_pb2.SolverParameter()
    text = _parse_text(text, solver, filename=filename, lenient=lenient)
    _upgrade_solver(solver, text, filename)
    return solver


def read_solver(path, *, lenient=False):
    """Read a solver prototxt as Caffe's ReadSolverParamsFromTextFileOrDie does.

    Upgrades ``solver_type`` → ``type`` and fills in ``snapshot_prefix`` when unset (solver path
    minus extension) or when it names a directory (directory/solver-stem). Net paths (``net``,
    ``train_net``, ``test_net``) stay as written: like Caffe, callers resolve them against the
    current directory. Inline nets (``net_param`` …) are not upgraded here; Caffe does not
    upgrade them either.
    """
    filename = os.fspath(path)
    solver, text = _load(filename, caffe_pb2.SolverParameter, lenient=lenient)
    _upgrade_solver(solver, text, filename)
    upgrade_snapshot_prefix(solver, filename)
    return solver


def write_net_text(net_param, path):
    """Write ``net_param`` as prototxt, atomically."""
    atomic_write_bytes(path, text_format.MessageToString(net_param).encode("utf-8"))


def write_net_binary(net_param, path):
    """Write ``net_param`` as binary protobuf (a .caffemodel), atomically."""
    atomic_write_bytes(path, net_param.SerializeToString())


def write_solver_text(solver_param, path):
    """Write ``solver_param`` as prototxt, atomically."""
    atomic_write_bytes(path, text_format.MessageToString(solver_param).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# The upgrade tools (Caffe's upgrade_net_proto_{text,binary}, upgrade_solver_proto_text)
# ---------------------------------------------------------------------------------------------

def upgrade_net_file(in_path, out_path, binary=False, *, lenient=False):
    """Read a net (text or binary), upgrade it, and write it as text (or binary).

    Like Caffe's tools, a file already in the current format is written unchanged (with a
    note), and an upgrade that had to drop something still writes its output, then raises
    ProtonetError so that the command exits with an error.
    """
    filename = os.fspath(in_path)
    net, _ = _load(filename, caffe_pb2.NetParameter, lenient=lenient)
    if not net_needs_upgrade(net):
        log.warning("File already in latest proto format: %s", filename)
    report = run_net_upgrades(net, source=filename)
    (write_net_binary if binary else write_net_text)(net, out_path)
    log.info("Wrote upgraded NetParameter %s proto to %s", "binary" if binary else "text",
             os.fspath(out_path))
    if not report.compatible:
        raise ProtonetError("encountered error(s) while upgrading (see the messages above); "
                            f"the upgraded net was written to {os.fspath(out_path)} anyway",
                            file=filename)


def upgrade_solver_file(in_path, out_path, *, lenient=False):
    """Read a solver prototxt, upgrade ``solver_type`` → ``type``, and write it as text.

    As Caffe's upgrade_solver_proto_text, this does not touch snapshot_prefix.
    """
    filename = os.fspath(in_path)
    solver, text = _load(filename, caffe_pb2.SolverParameter, lenient=lenient)
    if not solver_needs_upgrade(solver):
        log.warning("File already in latest proto format: %s", filename)
    _upgrade_solver(solver, text, filename)
    write_solver_text(solver, out_path)
    log.info("Wrote upgraded SolverParameter text proto to %s", os.fspath(out_path))
