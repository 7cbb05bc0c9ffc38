# Control repository served by the lab's git server (combination 3 scenario): the
# play checks it out on every master and installs its Puppetfile with r10k. Verify
# changes the revision below, pushes, re-runs the play and expects it from every master.
node default {
  $compiled_on = strip(generate('/bin/cat', '/etc/hostname'))
  notify { 'puppet-cluster-proof':
    message => "compiled by ${server_facts['servername']} on ${compiled_on}",
  }
  # Exported resources (with PuppetDB, where the masters have storeconfigs): every node
  # exports a file naming the master host that compiled its catalog (its host name: masters
  # sharing one certificate have one servername) and collects every node's, so a node
  # compiled by one master holds the files compiled by the others.
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
  class { 'cluster_proof':
    revision => 1,
  }
}
