"""A log formatter for the demo's terminal output: the app's warnings are long sentences for
an operator's log; here they are wrapped to 100 columns like the rest of the output."""

import logging
import textwrap


class WrappedFormatter(logging.Formatter):
    def format(self, record):
        text = f"log {record.levelname}: {record.getMessage()}"
        return textwrap.fill(text, 100, initial_indent="  ", subsequent_indent="      ")
