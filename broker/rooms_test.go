package broker

import (
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// maxMethods is the most methods a type of package broker may have, its
// own and those promoted from embedded types of the package (a room with
// one door, not a building: docs/ARCHITECTURE.md).
const maxMethods = 25

// TestMethodCount keeps every type of the package, in its production
// files, at maxMethods or fewer, exported and unexported methods alike.
func TestMethodCount(t *testing.T) {
	counts, err := methodCounts(".")
	if err != nil {
		t.Fatal(err)
	}
	if counts["Broker"] == 0 {
		t.Fatalf("no methods found on Broker: the counter is broken (counts: %v)", counts)
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return counts[names[i]] > counts[names[j]] })
	var top []string
	for _, n := range names[:min(6, len(names))] {
		top = append(top, n+"="+itoa(counts[n]))
	}
	t.Logf("largest types: %s", strings.Join(top, ", "))
	for _, n := range names {
		if counts[n] > maxMethods {
			t.Errorf("type %s has %d methods (own and promoted); split it: at most %d", n, counts[n], maxMethods)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// methodCounts parses the non-test files of dir and returns, per type, its
// declared methods plus those promoted from embedded types declared there.
func methodCounts(dir string) (map[string]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fset := gotoken.NewFileSet()
	own := map[string]map[string]bool{} // type → method names
	embeds := map[string][]string{}     // type → embedded local types
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil || len(d.Recv.List) == 0 {
					continue
				}
				typ := recvName(d.Recv.List[0].Type)
				if own[typ] == nil {
					own[typ] = map[string]bool{}
				}
				own[typ][d.Name.Name] = true
			case *ast.GenDecl:
				for _, s := range d.Specs {
					ts, ok := s.(*ast.TypeSpec)
					if !ok {
						continue
					}
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					for _, fld := range st.Fields.List {
						if len(fld.Names) == 0 {
							embeds[ts.Name.Name] = append(embeds[ts.Name.Name], recvName(fld.Type))
						}
					}
				}
			}
		}
	}
	var all func(typ string, seen map[string]bool) map[string]bool
	all = func(typ string, seen map[string]bool) map[string]bool {
		out := map[string]bool{}
		if seen[typ] {
			return out
		}
		seen[typ] = true
		for m := range own[typ] {
			out[m] = true
		}
		for _, e := range embeds[typ] {
			for m := range all(e, seen) {
				out[m] = true
			}
		}
		return out
	}
	counts := map[string]int{}
	for typ := range own {
		counts[typ] = len(all(typ, map[string]bool{}))
	}
	for typ := range embeds {
		counts[typ] = len(all(typ, map[string]bool{}))
	}
	return counts, nil
}

// recvName is the type name of a receiver or embedded field expression.
func recvName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvName(e.X)
	case *ast.Ident:
		return e.Name
	case *ast.IndexExpr:
		return recvName(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	}
	return ""
}
