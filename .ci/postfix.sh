#!/usr/bin/env bash
# .ci/postfix.sh — install (if missing) and configure Debian's postfix as a
# loopback-only upstream MTA for smtpgate's end-to-end tests. Idempotent.
#
#   127.0.0.1:10025  smtpd, no TLS
#   127.0.0.1:10026  smtpd, STARTTLS offered (self-signed cert, see below)
#   nothing on port 25, IPv4 loopback only.
#
# Every recipient @example.test / @example.org is delivered into ONE Maildir:
#   ${SMTPGATE_POSTFIX_MAILDIR:-/var/tmp/smtpgate-postfix/Maildir/}
# owned by the system user smtpgate-mail. Other domains: 554 5.7.1 (relay denied).
# Canned per-recipient RCPT answers:
#   reject@example.test    550 5.1.1
#   tempfail@example.test  450 4.2.0
# One file per accepted recipient, LF line endings (CRLF → LF, dots unstuffed).
# Each file = 4 prepended headers + the message as received, in this order:
#   Return-Path: <envelope sender>          (virtual(8); "<>" for a null sender)
#   X-Original-To: <rcpt>                   (virtual(8), enable_original_recipient)
#   Delivered-To: <rcpt>                    (virtual(8))
#   Received: from HELO (localhost [127.0.0.1])  (smtpd; 3 folded lines, TAB-indented,
#   \tby gw.test (Postfix) with ESMTP[S] id QUEUEID   "for <rcpt>;" only when the
#   \t[for <rcpt>;] DATE                              transaction had one recipient)
# Nothing else is added (no Message-ID/Date/From). A message whose first line is
# not a header gets an empty line inserted after Received (header/body split).
# Bare LF is accepted as a line end (smtpd_forbid_bare_newline=no in 3.7.11), so
# LF.LF, CRLF.LF and LF.CRLF all END the DATA phase.
#
# Optional env: SMTPGATE_POSTFIX_MAILDIR (target Maildir, must end up absolute),
#               SMTPGATE_POSTFIX_CLEAN=1 (empty the Maildir first).
# stdout: only KEY=value lines (shell-quoted) for the caller to eval;
# diagnostics go to stderr, command output to $SETUP_LOG (shown on failure).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

PLAIN_ADDR=127.0.0.1:10025
TLS_ADDR=127.0.0.1:10026
MAILNAME=gw.test
MAIL_USER=smtpgate-mail
CERT=/etc/postfix/smtpgate-test.crt
KEY=/etc/postfix/smtpgate-test.key
ACCESS=/etc/postfix/smtpgate-recipient-access
MAILLOG=/var/log/smtpgate-postfix.log
SETUP_LOG=/var/log/smtpgate-postfix-setup.log
MARKER='# managed by smtpgate .ci/postfix.sh'

maildir=${SMTPGATE_POSTFIX_MAILDIR:-/var/tmp/smtpgate-postfix/Maildir/}
maildir=${maildir%/}/            # exactly one trailing slash = Maildir format
case $maildir in
  /?*/*) ;;
  *) echo "postfix.sh: SMTPGATE_POSTFIX_MAILDIR must be an absolute path below / (got '$maildir')" >&2; exit 1 ;;
esac
mail_base=$(dirname "$maildir")
mail_leaf=$(basename "$maildir")/

die() { echo "postfix.sh: $*" >&2; exit 1; }
: >"$SETUP_LOG"
quiet() { # run a command, output to the setup log; on failure show it and stop
  if ! "$@" >>"$SETUP_LOG" 2>&1 </dev/null; then
    echo "postfix.sh: failed: $*" >&2
    tail -n 40 "$SETUP_LOG" >&2
    exit 1
  fi
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

# --- 1. install --------------------------------------------------------------
installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }
pkgs=()   # only what is missing: naming an installed package would upgrade it
for p in postfix openssl; do installed "$p" || pkgs+=("$p"); done
if ((${#pkgs[@]})); then
  echo "postfix.sh: installing ${pkgs[*]}" >&2
  printf '%s\n' \
    "postfix postfix/main_mailer_type select No configuration" \
    "postfix postfix/mailname string $MAILNAME" | debconf-set-selections >>"$SETUP_LOG" 2>&1
  apt_install() { apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${pkgs[@]}"; }
  for p in "${pkgs[@]}"; do   # no candidate (lists missing or stale) → update once
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]'; then quiet apt-get update -q; break; fi
  done
  if ! apt_install >>"$SETUP_LOG" 2>&1 </dev/null; then
    quiet apt-get update -q   # stale package lists → refresh once and retry
    quiet apt_install
  fi
fi
command -v postfix >/dev/null || die "postfix binary missing after install"

# --- 2. mail user, Maildir, TLS cert ------------------------------------------
if ! id -u "$MAIL_USER" >/dev/null 2>&1; then
  quiet useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "smtpgate test mail sink" "$MAIL_USER"
fi
mail_uid=$(id -u "$MAIL_USER")
mail_gid=$(id -g "$MAIL_USER")

mkdir -p "$maildir"/new "$maildir"/cur "$maildir"/tmp
# only the Maildir itself belongs to the mail user (its parent may be /tmp or /var/tmp)
chown "$mail_uid:$mail_gid" "$maildir" "$maildir"/new "$maildir"/cur "$maildir"/tmp
chmod 0755 "$maildir" "$maildir"/new "$maildir"/cur "$maildir"/tmp
if [[ ${SMTPGATE_POSTFIX_CLEAN:-0} == 1 ]]; then
  find "$maildir"/new "$maildir"/cur "$maildir"/tmp -mindepth 1 -maxdepth 1 -type f -delete
fi
runuser -u "$MAIL_USER" -- test -w "$maildir/tmp" -a -x "$maildir/new" \
  || die "$maildir is not writable by $MAIL_USER (is a parent directory closed?)"

if [[ ! -s $CERT || ! -s $KEY ]]; then
  quiet openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -subj "/CN=$MAILNAME" -addext "subjectAltName=DNS:$MAILNAME,DNS:localhost,IP:127.0.0.1" \
    -keyout "$KEY" -out "$CERT"
fi
chmod 0600 "$KEY"
chmod 0644 "$CERT"

# --- 3. configuration ------------------------------------------------------------
changed=0
put() { # put DEST < content ; replaces DEST only if the content differs
  local dest=$1 tmp
  tmp=$(mktemp "$dest.XXXXXX")
  cat >"$tmp"
  chmod 0644 "$tmp"
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
  else
    if [[ -f $dest && ! -e $dest.smtpgate-orig ]] && ! grep -qF "$MARKER" "$dest"; then
      cp -p "$dest" "$dest.smtpgate-orig"   # keep a foreign config once
    fi
    mv -f "$tmp" "$dest"
    changed=1
  fi
}

put "$ACCESS" <<EOF
$MARKER
reject@example.test    550 5.1.1 smtpgate test reject
tempfail@example.test  450 4.2.0 smtpgate test tempfail
EOF

put /etc/postfix/main.cf <<EOF
$MARKER
compatibility_level = 3.6
myhostname = $MAILNAME
mydomain = $MAILNAME
myorigin = \$myhostname
smtpd_banner = \$myhostname ESMTP Postfix
biff = no
append_dot_mydomain = no
readme_directory = no
maillog_file = $MAILLOG

inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8

# nothing is delivered locally or relayed out: only the two test domains exist
mydestination =
relay_domains =
relayhost =
local_transport = error:5.1.1 local delivery disabled on the smtpgate test upstream
default_transport = error:5.7.1 outbound mail disabled on the smtpgate test upstream
alias_maps =
alias_database =
notify_classes =

virtual_mailbox_domains = example.test, example.org
virtual_mailbox_base = $mail_base
virtual_mailbox_maps = static:$mail_leaf
virtual_uid_maps = static:$mail_uid
virtual_gid_maps = static:$mail_gid
virtual_minimum_uid = $mail_uid
virtual_mailbox_limit = 0
mailbox_size_limit = 0
message_size_limit = 52428800

smtpd_client_restrictions = permit_mynetworks, reject
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:$ACCESS

# relay mail as received: no header rewriting, no Message-ID/Date/From added
local_header_rewrite_clients =
always_add_missing_headers = no

smtpd_tls_security_level = none
smtp_tls_security_level = none
EOF

put /etc/postfix/master.cf <<EOF
$MARKER
# service type  private unpriv  chroot  wakeup  maxproc command + args
$PLAIN_ADDR inet n   -       n       -       -       smtpd
  -o syslog_name=postfix/smtpgate-plain
  -o smtpd_tls_security_level=none
$TLS_ADDR inet n   -       n       -       -       smtpd
  -o syslog_name=postfix/smtpgate-tls
  -o smtpd_tls_security_level=may
  -o smtpd_tls_cert_file=$CERT
  -o smtpd_tls_key_file=$KEY
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF

[[ -s /etc/mailname ]] || echo "$MAILNAME" >/etc/mailname

# --- 4. (re)start -----------------------------------------------------------------
quiet postfix check
if postfix status >/dev/null 2>&1; then
  if [[ $changed == 1 ]]; then
    # listen addresses / inet_* only take effect on a full restart
    quiet postfix stop
    for _ in $(seq 1 100); do postfix status >/dev/null 2>&1 || break; sleep 0.2; done
    postfix status >/dev/null 2>&1 && die "postfix did not stop within 20 s"
    quiet postfix start
  else
    quiet postfix reload
  fi
else
  quiet postfix start
fi

banner() { # first line a server at HOST:PORT sends, within 2 s
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
    IFS= read -r -t 2 line <&3 || exit 1
    printf "QUIT\r\n" >&3
    printf "%s\n" "$line"' _ "$1" 2>/dev/null
}
for addr in "$PLAIN_ADDR" "$TLS_ADDR"; do
  ok=0
  for _ in $(seq 1 40); do   # ≤ 20 s
    if [[ $(banner "$addr") == "220 $MAILNAME "* ]]; then ok=1; break; fi
    sleep 0.5
  done
  if [[ $ok != 1 ]]; then
    echo "postfix.sh: no '220 $MAILNAME' banner on $addr within 20 s; last log lines:" >&2
    tail -n 20 "$MAILLOG" >&2 2>/dev/null || true
    exit 1
  fi
done

printf 'SMTPGATE_TEST_POSTFIX_ADDR=%q\n' "$PLAIN_ADDR"
printf 'SMTPGATE_TEST_POSTFIX_TLS_ADDR=%q\n' "$TLS_ADDR"
printf 'SMTPGATE_TEST_POSTFIX_TLS_CERT=%q\n' "$CERT"
printf 'SMTPGATE_TEST_POSTFIX_MAILDIR=%q\n' "$maildir"
