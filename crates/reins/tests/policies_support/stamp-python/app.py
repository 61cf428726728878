"""Test fixture (hot swap across languages): the Python twin of the Rust
fixture plugins/testing/stamp-a, answering with message "python"."""

import reins_sdk as reins


def validate(ctx, output):
    return [reins.info("", "stamp", "python")]


Validator = reins.validator(validate)
