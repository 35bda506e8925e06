package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/wxbroker/wxbroker/config"
)

const (
	doctorSynopsis = "--config FILE"
	doctorSummary  = "check the configuration, Redis, the leader, every app and WeChat; print each problem with its fix"
)

// severity grades a finding.
type severity int

const (
	sevOK severity = iota
	sevWarn
	sevFail
)

func (s severity) String() string {
	switch s {
	case sevOK:
		return "ok"
	case sevWarn:
		return "WARN"
	default:
		return "FAIL"
	}
}

// finding is one result of a doctor check.
type finding struct {
	Severity severity
	Check    string // the check's name, e.g. "config"
	Message  string // what was found
	Fix      string // what to do; empty for ok findings
}

// check is one doctor check. It must not invalidate any token or change any
// state: doctor only looks.
type check struct {
	name string
	run  func(ctx context.Context) []finding
}

// doctorChecks returns the checks to run once the configuration at path
// loaded: a summary of the configuration, the modes of the files holding
// secrets, then brokerChecks (Redis, the leader, every app's stored
// credentials, WeChat's reachability).
func doctorChecks(path string, cfg *config.Config) []check {
	return append([]check{
		{name: "config", run: func(context.Context) []finding { return configSummary(cfg) }},
		{name: "files", run: func(context.Context) []finding { return fileModeFindings(path, cfg) }},
	}, brokerChecks(cfg)...)
}

// fileModeFindings warns about secret files (and a configuration file with
// inline secrets) that other users may read.
func fileModeFindings(path string, cfg *config.Config) []finding {
	var out []finding
	for _, p := range config.FileModeProblems(path, cfg) {
		fix := p.Fix
		p.Fix = ""
		out = append(out, finding{Severity: sevWarn, Check: "files", Message: p.String(), Fix: fix})
	}
	if len(out) == 0 {
		out = append(out, finding{Severity: sevOK, Check: "files",
			Message: "no secret file (nor the configuration, if it holds secrets) is readable by other users"})
	}
	return out
}

func doctorCommand() command {
	return command{synopsis: doctorSynopsis, summary: doctorSummary, run: runDoctor}
}

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("doctor", doctorSynopsis, doctorSummary, stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *path == "" || fs.NArg() != 0 {
		fs.Usage()
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		findings := configFindings(err)
		printFindings(stdout, findings)
		fmt.Fprintf(stdout, "\n%d problem(s) in %s; later checks need a valid configuration.\n", len(findings), *path)
		return exitFailure
	}
	failed := 0
	for _, c := range doctorChecks(*path, cfg) {
		if ctx.Err() != nil {
			return exitFailure
		}
		got := c.run(ctx)
		printFindings(stdout, got)
		for _, f := range got {
			if f.Severity == sevFail {
				failed++
			}
		}
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "\n%d check(s) failed.\n", failed)
		return exitFailure
	}
	return exitOK
}

// configFindings turns a Load error into one finding per problem.
func configFindings(err error) []finding {
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		return []finding{{Severity: sevFail, Check: "config", Message: err.Error(),
			Fix: "check the path and the YAML syntax"}}
	}
	out := make([]finding, 0, len(ve.Problems))
	for _, p := range ve.Problems {
		fix := p.Fix
		p.Fix = ""
		out = append(out, finding{Severity: sevFail, Check: "config", Message: p.String(), Fix: fix})
	}
	return out
}

func configSummary(cfg *config.Config) []finding {
	msg := fmt.Sprintf("valid: %d namespace(s), %d app(s), %d client(s); instance %s",
		len(cfg.Namespaces), len(cfg.Apps()), len(cfg.Clients), cfg.InstanceID)
	if cfg.LoginEnabled() {
		msg += "; login on " + cfg.PublicListen
	}
	return []finding{{Severity: sevOK, Check: "config", Message: msg}}
}

func printFindings(w io.Writer, fs []finding) {
	for _, f := range fs {
		fmt.Fprintf(w, "%-4s %-8s %s\n", f.Severity, f.Check, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(w, "     %-8s fix: %s\n", "", f.Fix)
		}
	}
}
