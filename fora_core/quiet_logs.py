"""Log lines that are not a user's concern, silenced before the libraries that emit them are imported.

peft imports bitsandbytes when it is installed; on a CPU with AVX512-BF16, bitsandbytes then warns that an
optional faster 4-bit kernel could not be fetched from the hub (the pure-torch path it falls back to is the
one QFoRA's tests run), once per process, on every command.
"""

import logging

logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
