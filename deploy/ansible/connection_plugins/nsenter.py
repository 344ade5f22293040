# A connection into a Linux container by its leader's pid: every command
# runs through `nsenter --target PID --all` (all of the container's
# namespaces, its root included), as root of the controller. For machines
# booted with `systemd-nspawn --register=no` (machinectl does not know
# them) on the controller itself, as integration/ansible.rs does; real
# hosts are reached over ssh (the inventory's default).
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: nsenter
    short_description: run in a container on the controller, through nsenter
    description:
        - Runs commands and copies files inside the namespaces of a process
          of the controller (the container's init, as the controller sees
          it), with util-linux's nsenter. Needs root on the controller.
    author: venussup
    extends_documentation_fragment:
        - connection_pipelining
    options:
      nsenter_pid:
        description: the pid (on the controller) of a process in the container, its init
        required: true
        vars:
          - name: nsenter_pid
      nsenter_timeout:
        description: seconds one command or copy may take before it is killed
        default: 300
        type: int
        vars:
          - name: nsenter_timeout
"""

import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils._text import to_bytes, to_native
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# What a login shell of a Debian root would have; the controller's own
# environment stays outside.
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}


class Connection(ConnectionBase):
    transport = "nsenter"
    has_pipelining = True
    default_user = "root"

    def _prefix(self):
        pid = str(self.get_option("nsenter_pid"))
        if not pid.isdigit():
            raise AnsibleConnectionFailure("nsenter_pid must be a pid, not %r" % pid)
        return ["nsenter", "--target", pid, "--all", "--"]

    def _run(self, argv, stdin=None, in_data=None, stdout=subprocess.PIPE):
        timeout = int(self.get_option("nsenter_timeout"))
        try:
            p = subprocess.Popen(
                self._prefix() + argv,
                stdin=stdin if stdin is not None else subprocess.PIPE,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=ENV,
            )
        except OSError as e:
            raise AnsibleConnectionFailure("cannot run nsenter: %s" % to_native(e))
        try:
            out, err = p.communicate(in_data, timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise AnsibleConnectionFailure(
                "%s: still running after %d s (nsenter_timeout); killed" % (argv, timeout)
            )
        return p.returncode, out, err

    def _connect(self):
        if not self._connected:
            display.vvv("NSENTER --target %s" % self.get_option("nsenter_pid"))
            self._connected = True
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv("EXEC %s" % cmd, host=self._play_context.remote_addr)
        return self._run(["/bin/sh", "-c", to_bytes(cmd)], in_data=in_data)

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._play_context.remote_addr)
        try:
            src = open(to_bytes(in_path), "rb")
        except IOError:
            raise AnsibleFileNotFound("file or module does not exist: %s" % in_path)
        with src:
            rc, _, err = self._run(
                ["/bin/sh", "-c", 'cat > "$1"', "sh", to_bytes(out_path)], stdin=src
            )
        if rc != 0:
            raise AnsibleError("failed to write %s: %s" % (out_path, to_native(err)))

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._play_context.remote_addr)
        with open(to_bytes(out_path), "wb") as dst:
            rc, _, err = self._run(["cat", "--", to_bytes(in_path)], stdout=dst)
        if rc != 0:
            raise AnsibleError("failed to read %s: %s" % (in_path, to_native(err)))

    def close(self):
        self._connected = False
