package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ferrymq/ferry/server/auth"
)

// passwd is `ferry passwd [--cost N] [--roles a,b] [--delete] FILE USER`: it adds or replaces USER in the
// password file FILE (created if missing, mode 0600) with the bcrypt hash of a password read from the first
// line of standard input; the password itself is never written. --delete removes USER. Other lines, comments
// included, are kept in place. Reload a running Ferry with SIGHUP. It returns the exit status.
func passwd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cost := fs.Int("cost", auth.DefaultPasswordCost, "bcrypt cost (each step doubles the CPU a check takes)")
	roles := fs.String("roles", "", "comma-separated roles of the rules file (empty: the default_role)")
	del := fs.Bool("delete", false, "remove the user")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry passwd [--cost N] [--roles a,b] [--delete] FILE USER  (password on standard input)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	if err := updatePasswords(fs.Arg(0), fs.Arg(1), *roles, *cost, *del, stdin); err != nil {
		fmt.Fprintln(stderr, "ferry passwd:", err)
		return 1
	}
	what := "updated"
	if *del {
		what = "removed"
	}
	fmt.Fprintf(stdout, "ferry passwd: %s %s in %s\n", what, fs.Arg(1), fs.Arg(0))
	return 0
}

// updatePasswords rewrites file with user's line added, replaced or (del) removed.
func updatePasswords(file, user, roles string, cost int, del bool, stdin io.Reader) error {
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot read %s: %w", file, errors.Unwrap(err))
	}
	if _, err := auth.ParsePasswordFile(old); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	var line string
	if !del {
		pw, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("cannot read the password from standard input: %w", err)
		}
		hash, err := auth.HashPassword([]byte(strings.TrimRight(pw, "\r\n")), cost)
		if err != nil {
			return err
		}
		u := auth.User{Hash: hash}
		for _, r := range strings.Split(roles, ",") {
			if r = strings.TrimSpace(r); r != "" {
				u.Roles = append(u.Roles, r)
			}
		}
		line = auth.FormatPasswordLine(user, u)
		if _, _, err := auth.ParsePasswordLine(line); err != nil {
			return err
		}
	}
	var out bytes.Buffer
	found := false
	for _, l := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if name, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && name == user && !strings.HasPrefix(l, "#") {
			found = true
			if !del {
				out.WriteString(line + "\n")
			}
			continue
		}
		if l != "" || out.Len() > 0 {
			out.WriteString(l + "\n")
		}
	}
	if !found {
		if del {
			return fmt.Errorf("no user %q in %s", user, file)
		}
		out.WriteString(line + "\n")
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, out.Bytes(), 0o600); err != nil {
		return fmt.Errorf("cannot write %s: %w", tmp, errors.Unwrap(err))
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("cannot replace %s: %w", file, errors.Unwrap(err))
	}
	return nil
}
