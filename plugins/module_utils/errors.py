# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed errors. Private to hypervisor.resize.

Every error the modules raise is a ResizeError; ResizeModule.run() turns it into fail_json with
the host, the domain and a hint saying what to do.
"""

from __future__ import annotations


class ResizeError(Exception):
    """A failure the operator must see: what went wrong, where, and what to do about it."""

    def __init__(self, msg, domain=None, host=None, hint=None, details=None):
        super().__init__(msg)
        self.msg = msg
        self.domain = domain
        self.host = host
        self.hint = hint
        self.details = details or {}

    def to_result(self):
        result = {"msg": self.full_message()}
        if self.domain:
            result["domain"] = self.domain
        if self.host:
            result["host"] = self.host
        if self.hint:
            result["hint"] = self.hint
        if self.details:
            result["details"] = self.details
        return result

    def full_message(self):
        parts = [self.msg]
        where = []
        if self.domain:
            where.append("domain %s" % self.domain)
        if self.host:
            where.append("host %s" % self.host)
        if where:
            parts.append("(%s)" % ", ".join(where))
        text = " ".join(parts)
        if self.hint:
            text += ". " + self.hint
        return text


class ValidationError(ResizeError):
    """The request is refused before anything is changed."""


class LibvirtError(ResizeError):
    """libvirt said no; details carry its error code."""


class TransferError(ResizeError):
    """The disk copy failed or could not be verified."""


class WaitTimeout(ResizeError):
    """A bounded wait ran out; details carry what was last seen."""
