/* A stand-in python.exe (and py.exe) for tests/test_run_bat.py, built with mingw-w64 and run under Wine.
 *
 * Each call appends one line to calls.log next to the executable:
 *     <exe name> TAB <arguments as passed> TAB <current directory> TAB PYTHONNOUSERSITE=<value>
 * and exits with the code of the first line of exit_codes.txt (same folder; "substring TAB code") whose
 * substring occurs in the arguments; 0 when none does. So `python -c "..."` (run.bat's version probe)
 * passes unless exit_codes.txt says otherwise.
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *skip_program(const char *cmd) {
    if (*cmd == '"') {
        cmd = strchr(cmd + 1, '"');
        cmd = cmd ? cmd + 1 : "";
    } else {
        while (*cmd && *cmd != ' ' && *cmd != '\t') cmd++;
    }
    while (*cmd == ' ' || *cmd == '\t') cmd++;
    return cmd;
}

int main(void) {
    char exe[MAX_PATH], dir[MAX_PATH], path[MAX_PATH + 32], cwd[MAX_PATH], nousersite[64] = "";
    GetModuleFileNameA(NULL, exe, MAX_PATH);
    strcpy(dir, exe);
    char *slash = strrchr(dir, '\\');
    const char *name = slash ? slash + 1 : exe;
    if (slash) *slash = '\0';
    const char *args = skip_program(GetCommandLineA());
    GetCurrentDirectoryA(MAX_PATH, cwd);
    GetEnvironmentVariableA("PYTHONNOUSERSITE", nousersite, sizeof nousersite);

    snprintf(path, sizeof path, "%s\\calls.log", dir);
    FILE *log = fopen(path, "ab");
    if (log) {
        fprintf(log, "%s\t%s\t%s\tPYTHONNOUSERSITE=%s\n", name, args, cwd, nousersite);
        fclose(log);
    }

    int code = 0;
    snprintf(path, sizeof path, "%s\\exit_codes.txt", dir);
    FILE *cfg = fopen(path, "rb");
    if (cfg) {
        char line[1024];
        while (fgets(line, sizeof line, cfg)) {
            char *tab = strrchr(line, '\t');
            if (!tab) continue;
            *tab = '\0';
            if (*line && strstr(args, line)) {
                code = atoi(tab + 1);
                break;
            }
        }
        fclose(cfg);
    }
    return code;
}
