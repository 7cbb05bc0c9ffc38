"""`--environment bench`: the code the masters compile, written on them for a measurement."""

import io
import tarfile
import time

from .lab import docker

# `--environment bench`: code shaped like a real control repository rather than the lab's
# two resources (the earlier hand measurements used a 300-resource catalog):
# BENCH_MODULES modules, each a parameterised class that declares BENCH_FILES_PER_MODULE files
# from an EPP template, all included by site.pp: 302 resources (336 catalog entries with the
# classes), and 30 manifests and 30 templates that a master without environment caching
# parses again for every request. The notify names the compiling master as the lab's own
# code does (molecule/shared/code), which the locustfile checks. Written for Puppet 5.5 and
# 8 alike.
BENCH_MODULES = 30
BENCH_FILES_PER_MODULE = 10
BENCH_SITE = r"""# Written by bench/load (env.py) for the duration of a measurement, then removed.
node default {
  $compiled_on = regsubst(generate('/bin/cat', '/etc/hostname'), '\s+$', '')
  notify { 'puppet-cluster-proof':
    message => "compiled by ${server_facts['servername']} on ${compiled_on}",
  }
  file { '/var/tmp/puppet-bench':
    ensure => directory,
  }
%s}
"""
BENCH_CLASS = r"""# A bench module: %(files)d files from a template, as a typical profile would.
class bench_%(n)02d (
  String $owner = 'root',
  Integer $copies = %(files)d,
) {
  Integer[1, $copies].each |$i| {
    file { "/var/tmp/puppet-bench/m%(n)02d-${i}.conf":
      ensure  => file,
      owner   => $owner,
      mode    => '0644',
      content => epp('bench_%(n)02d/settings.epp', {'index' => $i, 'node' => $trusted['certname']}),
      require => File['/var/tmp/puppet-bench'],
    }
  }
}
"""
BENCH_TEMPLATE = """<%%- | Integer $index, String $node | -%%>
# bench module %(n)02d, file <%%= $index %%> of %(files)d, for <%%= $node %%>
<%% [1, 2, 3].each |$k| { -%%>
setting_<%%= $k %%> = <%%= $index * $k %%>
<%% } -%%>
"""


def bench_env_files():
    """path inside the environment -> content."""
    includes = "".join(f"  include bench_{n:02d}\n" for n in range(1, BENCH_MODULES + 1))
    files = {"manifests/site.pp": BENCH_SITE % includes}
    for n in range(1, BENCH_MODULES + 1):
        files[f"modules/bench_{n:02d}/manifests/init.pp"] = BENCH_CLASS % {"n": n, "files": BENCH_FILES_PER_MODULE}
        files[f"modules/bench_{n:02d}/templates/settings.epp"] = BENCH_TEMPLATE % {"n": n, "files": BENCH_FILES_PER_MODULE}
    return files


def bench_env_tar():
    """bench_env_files() as an uncompressed tar archive (bytes), for `tar -x` on a master."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content in bench_env_files().items():
            data = content.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def install_bench_env(lab):
    archive = bench_env_tar()
    target = lab.bench_env_dir
    for host in lab.masters.values():
        docker("exec", "-i", host, "sh", "-c",
               f"rm -rf {target} && mkdir -p {target} && tar -x -C {target} --no-same-owner",
               input_bytes=archive)
    if lab.name != "legacy":
        # New code under environment_timeout = unlimited: flush the cache as the play's code
        # deployment does (reload puppetserver), or a previous version of this code is served.
        for host in lab.masters.values():
            lab.run_in(host, "systemctl", "reload", "puppetserver")


def remove_bench_env(lab):
    for host in lab.masters.values():
        lab.run_in(host, "rm", "-rf", lab.bench_env_dir, check=False)
