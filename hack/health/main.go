// Command health computes the health that GitOps tools give an object, with their own code:
//
//	health kstatus < object.json            kstatus (sigs.k8s.io/cli-utils), as Flux and kubectl-based tools use it
//	health argocd SCRIPT.lua < object.json  an Argo CD resource health check, run by gopher-lua as Argo CD runs it
//
// Both print one JSON object: {"status": "...", "message": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: health kstatus | health argocd SCRIPT.lua (object JSON on stdin)")
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading the object: %v", err)
	}
	// As the API machinery decodes it: whole numbers as int64.
	var obj map[string]interface{}
	if err := utiljson.Unmarshal(input, &obj); err != nil {
		fail("the object is not JSON: %v", err)
	}
	var out result
	switch os.Args[1] {
	case "kstatus":
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			fail("kstatus: %v", err)
		}
		out = result{Status: res.Status.String(), Message: res.Message}
	case "argocd":
		if len(os.Args) != 3 {
			fail("usage: health argocd SCRIPT.lua")
		}
		out = argocd(os.Args[2], obj)
	default:
		fail("unknown check %q", os.Args[1])
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}

// argocd runs a health script the way Argo CD does: the object as the global table `obj`, the
// script's returned table read for `status` and `message`.
func argocd(script string, obj map[string]interface{}) result {
	source, err := os.ReadFile(script)
	if err != nil {
		fail("%v", err)
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(string(source)); err != nil {
		fail("running %s: %v", script, err)
	}
	returned, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		fail("%s returned no table", script)
	}
	return result{
		Status:  lua.LVAsString(returned.RawGetString("status")),
		Message: lua.LVAsString(returned.RawGetString("message")),
	}
}

func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]interface{}:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	default:
		fail("unexpected JSON value %T", value)
		return lua.LNil
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "health: "+format+"\n", args...)
	os.Exit(2)
}
