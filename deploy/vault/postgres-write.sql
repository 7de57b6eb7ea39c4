CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
GRANT pg_monitor TO "{{name}}";
GRANT pg_read_all_data TO "{{name}}";
GRANT pg_signal_backend TO "{{name}}";
