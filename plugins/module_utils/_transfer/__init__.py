# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk transfer between hypervisors without standing trust. Private to hypervisor.resize.

One concern per module, so that each rule of docs/security.md is found in one place:

  wire.py      the stream's frames and digest (shared by the sender, local copies and benchmarks)
  receiver.py  the receive-only script the destination runs as the one-off key's forced command
  sender.py    the source's side: ssh command line, the check before the power-off, the stream
  keys.py      one-off keys in authorized_keys (restrict, command, from, expiry-time) and host keys
  markers.py   shared-storage markers (made on the destination, acknowledged by the source)
  local.py     verified sparse copies on one host (backups beside a disk)
  progress.py  the copy's progress file and the async job watcher
"""
