path "sys/policies/acl/opsbot-action-*" { capabilities = ["create", "update", "delete"] }
path "auth/token/create" { capabilities = ["update", "sudo"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "sys/leases/revoke/*" { capabilities = ["update"] }
