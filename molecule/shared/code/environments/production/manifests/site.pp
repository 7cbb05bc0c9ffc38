# Test code deployed to every master by the play (puppet_master_code_source).
# The notice names the master that compiled the catalog, so a verify step can see it:
# its certificate name and its host name (masters sharing one certificate, as in
# combination 5, differ only by the latter; generate() runs on the compiling master).
node default {
  # regsubst, not strip(): Puppet 5 (the legacy scenario) has no built-in strip().
  $compiled_on = regsubst(generate('/bin/cat', '/etc/hostname'), '\s+$', '')
  notify { 'puppet-cluster-proof':
    message => "compiled by ${server_facts['servername']} on ${compiled_on}",
  }
  # The certificate's pp_role as the compiling master saw it, as a catalog tag (nothing
  # to apply): verify compares it between masters and fronts (issue 15, item 12).
  tag("trusted_pp_role_${trusted['extensions']['pp_role']}")
  # Exported resources (with PuppetDB, where the masters have storeconfigs: combination 5
  # here, combination 3 in its git code): every node exports a file naming the master
  # host that compiled its catalog and collects every node's.
  if $settings::storeconfigs {
    file { '/var/tmp/puppet-cluster-exported':
      ensure => directory,
    }
    @@file { "/var/tmp/puppet-cluster-exported/${trusted['certname']}":
      ensure  => file,
      content => "exported by ${trusted['certname']}, catalog from ${compiled_on}\n",
      tag     => 'puppet_cluster_exported',
    }
    File <<| tag == 'puppet_cluster_exported' |>>
  }
  file { '/var/tmp/puppet-cluster-proof':
    ensure  => file,
    content => "code revision 1\n",
  }
}
