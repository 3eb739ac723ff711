"""The one exception type for user mistakes.

Everything a user can get wrong (a malformed prototxt, an unknown layer type, a missing data
source, mismatched shapes, a corrupt weights file) raises :class:`ProtonetError`. The CLI prints
it on one line and exits with status 1; programming errors stay ordinary tracebacks.
"""


class ProtonetError(Exception):
    """A user-facing error that knows where it happened.

    ``str(err)`` reads ``models/lenet.prototxt:42: layer 'conv1' (Convolution): message``; each
    part of the context is optional and can be filled in later by whoever knows it (the parser
    knows the file and line, the net knows the layer).
    """

    def __init__(self, message, *, file=None, line=None, layer=None, layer_type=None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.layer = layer
        self.layer_type = layer_type

    def with_context(self, *, file=None, line=None, layer=None, layer_type=None):
        """Fill in context that is still missing; return self so callers can ``raise err.with_context(...)``.

        An error about another file (a layer's data source, its mean file) keeps that file in
        its message and takes the outer location, so the user sees both: the prototxt line
        that names the file, and the file itself.
        """
        if file is not None and self.file is not None and str(file) != self.file and \
                line is not None:
            inner = f"{self.file}:{self.line}" if self.line is not None else self.file
            self.message = f"{inner}: {self.message}"
            self.args = (self.message,)
            self.file, self.line = str(file), None
        if self.file is None and file is not None:
            self.file = str(file)
        if self.line is None and line is not None:
            self.line = line
        if self.layer is None and layer is not None:
            self.layer = layer
        if self.layer_type is None and layer_type is not None:
            self.layer_type = layer_type
        return self

    def __str__(self):
        prefix = ""
        if self.file is not None:
            prefix = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        if self.layer is not None:
            kind = f" ({self.layer_type})" if self.layer_type else ""
            prefix += f"layer '{self.layer}'{kind}: "
        return prefix + self.message
