#!/usr/bin/env python
# Loads the import-resolver rules of /etc/cloudify/config.yaml into the Cloudify Manager's
# database and restarts the REST service so that it uses them.
#
# Why: the manager copies provider_context.import_resolver from config.yaml into its
# database only when the database is created, so rules that cfy-init's patch step adds to
# config.yaml later never reach a running manager. The legacy ONAP image did this with a
# helper run in the manager's virtualenv; this is its replacement, run by cfy-init once per
# store as an "after ready" task (a marker file in the store keeps it from running again).
#
# What it writes: the rules list of config.yaml, in its order, followed by any rule already
# in the database whose prefix is not in that list. Running it twice gives the same result;
# when the database already holds that list nothing is written and nothing restarted.
#
# Runs with the manager's own Python (2.7 on Cloudify 4.x, 3.6 on 5.x):
#   /opt/manager/env/bin/python load-resolver-rules.py
# Backends: "manager" uses the REST service's own storage layer (manager_rest), as the
# legacy helper did; "sql" talks to PostgreSQL directly (psycopg2, --dsn) for managers whose
# Python packages cannot be imported from here, and for tests. "auto" tries manager first.
#
# Exit status: 0 on success (changed or not), 1 with one line on stderr otherwise.

from __future__ import print_function

import argparse
import pickle
import shlex
import subprocess
import sys

PROVIDER_CONTEXT_ID = 'CONTEXT'
RESTART = 'supervisorctl -c /etc/supervisord.conf restart cloudify-restservice'


class Failure(Exception):
    """An error with a one-line message for the operator."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        description='Load the import-resolver rules of config.yaml into the manager database.')
    p.add_argument('--config', default='/etc/cloudify/config.yaml',
                   help="Cloudify's config.yaml holding the rules")
    p.add_argument('--rules-path',
                   default='provider_context.import_resolver.parameters.rules',
                   help='dotted key path of the rules list in config.yaml')
    p.add_argument('--backend', choices=['auto', 'manager', 'sql'], default='auto')
    p.add_argument('--dsn', default='dbname=cloudify_db user=cloudify host=localhost',
                   help='libpq connection string for the sql backend')
    p.add_argument('--restart', default=RESTART,
                   help='command that restarts the REST service after a change')
    p.add_argument('--no-restart', action='store_true')
    p.add_argument('--dry-run', action='store_true',
                   help='print what would change, write nothing')
    return p.parse_args(argv)


def wanted_rules(config, rules_path):
    """The rules list of config.yaml, checked to be a list of one-entry mappings."""
    import yaml
    try:
        with open(config) as f:
            doc = yaml.safe_load(f)
    except (IOError, OSError) as e:
        raise Failure('%s: cannot read: %s' % (config, e))
    except yaml.YAMLError as e:
        raise Failure('%s: not valid YAML: %s' % (config, str(e).replace('\n', ' ')))
    node = doc
    for key in rules_path.split('.'):
        if not isinstance(node, dict) or key not in node:
            raise Failure('%s: no rules list at %s' % (config, rules_path))
        node = node[key]
    if not isinstance(node, list) or not all(is_rule(r) for r in node):
        raise Failure('%s: %s is not a list of {prefix: target} items' % (config, rules_path))
    return node


def is_rule(item):
    return isinstance(item, dict) and len(item) == 1


def prefix_of(rule):
    return next(iter(rule)) if is_rule(rule) else None


def merged(current, wanted):
    """wanted in order, then the current rules whose prefix wanted does not have."""
    ours = set(prefix_of(r) for r in wanted)
    return list(wanted) + [r for r in current if prefix_of(r) not in ours]


def rules_of(context):
    """The rules list inside a provider context dict (created when missing)."""
    params = (context.setdefault('cloudify', {})
              .setdefault('import_resolver', {})
              .setdefault('parameters', {}))
    return params.setdefault('rules', [])


def set_rules(context, rules):
    rules_of(context)  # creates the path
    context['cloudify']['import_resolver']['parameters']['rules'] = rules


def update_with_manager(wanted, dry_run):
    """Through the REST service's storage layer (the legacy helper's way)."""
    from sqlalchemy.orm.attributes import flag_modified
    from manager_rest.flask_utils import setup_flask_app
    from manager_rest.storage import get_storage_manager, models
    try:
        from manager_rest.constants import PROVIDER_CONTEXT_ID as ctx_id
    except ImportError:
        ctx_id = PROVIDER_CONTEXT_ID
    with setup_flask_app().app_context():
        sm = get_storage_manager()
        ctx = sm.get(models.ProviderContext, ctx_id)
        current = list(rules_of(ctx.context))
        new = merged(current, wanted)
        if new == current or dry_run:
            return current, new
        set_rules(ctx.context, new)
        flag_modified(ctx, 'context')
        sm.update(ctx)
        return current, new


def update_with_sql(wanted, dsn, dry_run):
    """Directly in PostgreSQL: provider_context.context is a pickled dict."""
    import psycopg2
    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.Error as e:
        raise Failure('cannot connect to the manager database (%s): %s'
                      % (dsn, str(e).strip().replace('\n', ' ')))
    try:
        with conn:
            with conn.cursor() as cur:
                cur.execute('SELECT context FROM provider_context WHERE id = %s FOR UPDATE',
                            (PROVIDER_CONTEXT_ID,))
                row = cur.fetchone()
                if row is None:
                    raise Failure('the manager database has no provider context yet '
                                  '(is the manager installed?)')
                context = pickle.loads(bytes(row[0]))
                current = list(rules_of(context))
                new = merged(current, wanted)
                if new == current or dry_run:
                    return current, new
                set_rules(context, new)
                # Protocol 2 reads back on every Python the manager has used (2.7 and 3.x).
                blob = psycopg2.Binary(pickle.dumps(context, protocol=2))
                cur.execute('UPDATE provider_context SET context = %s WHERE id = %s',
                            (blob, PROVIDER_CONTEXT_ID))
                return current, new
    finally:
        conn.close()


def update(args, wanted):
    if args.backend in ('auto', 'manager'):
        try:
            return update_with_manager(wanted, args.dry_run)
        except ImportError as e:
            if args.backend == 'manager':
                raise Failure('the manager packages cannot be imported (%s); run with the '
                              "manager's Python, /opt/manager/env/bin/python" % e)
    return update_with_sql(wanted, args.dsn, args.dry_run)


def restart(command):
    rc = subprocess.call(shlex.split(command))
    if rc != 0:
        raise Failure('rules saved, but restarting the REST service failed (%s: exit %d)'
                      % (command, rc))


def main(argv):
    args = parse_args(argv)
    try:
        wanted = wanted_rules(args.config, args.rules_path)
        current, new = update(args, wanted)
        if new == current:
            print('import resolver rules: the database already has them (%d rules)' % len(new))
            return 0
        added = [prefix_of(r) for r in new if r not in current]
        if args.dry_run:
            print('import resolver rules: would write %d rules (%d new or changed: %s)'
                  % (len(new), len(added), ', '.join(added)))
            return 0
        print('import resolver rules: wrote %d rules (%d new or changed: %s)'
              % (len(new), len(added), ', '.join(added)))
        if not args.no_restart:
            restart(args.restart)
            print('REST service restarted')
        return 0
    except Failure as e:
        print('load-resolver-rules: %s' % e, file=sys.stderr)
        return 1
    except Exception as e:  # anything from the manager's own code: still one line
        print('load-resolver-rules: %s: %s' % (type(e).__name__, str(e).replace('\n', ' ')),
              file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
