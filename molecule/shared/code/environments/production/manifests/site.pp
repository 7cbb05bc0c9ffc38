# Test code deployed to every master by the play (puppet_master_code_source).
# The notice names the master that compiled the catalog, so a verify step can see it.
node default {
  notify { 'puppet-cluster-proof':
    message => "compiled by ${server_facts['servername']}",
  }
  file { '/var/tmp/puppet-cluster-proof':
    ensure  => file,
    content => "code revision 1\n",
  }
}
