@echo off
rem Trellis Desktop for Windows. The first run installs into .venv here; later runs start at once.
rem   run.bat [--cpu] [app options]          start the app (opens the browser)
rem   run.bat [--cpu] test [pytest args]     run the tests (installs the test tools too)
rem   --repair, --update, --wheelhouse DIR and the other launcher options: run.bat --launcher-help
rem The logic is in installer\ (Python); this file finds Python and runs check, install, launch.
setlocal
cd /d "%~dp0"

rem Keep the user's own Python setup out of the app; keep the pip config (mirrors, CI wheels).
set "PYTHONNOUSERSITE=1"
set "PIP_USER=0"
set "PIP_DISABLE_PIP_VERSION_CHECK=1"
set "PYTHONPATH="
set "PYTHONHOME="

rem The app's own Python (.python\, made by installer\get_python.ps1), then 64-bit Python 3.11 (the tested one),
rem then 3.12, then whatever "python" is.
set "PY="
if defined TRELLIS_PYTHON call :try "%TRELLIS_PYTHON%"
if not defined TRELLIS_PYTHON call :try_private
if not defined PY call :try py -3.11
if not defined PY call :try py -3.12
if not defined PY call :try python
rem None: offer to download a private one (asks in a console; TRELLIS_FETCH_PYTHON=1 / 0: yes / no without asking).
if not defined PY if not defined TRELLIS_PYTHON call :fetch_python
if not defined PY goto no_python
if /i "%~1"=="--launcher-help" goto launcher_help

rem check: 0 = installed and up to date, 10 = install (or update) first, else an error already explained.
%PY% -m installer check %*
set "RC=%ERRORLEVEL%"
if "%RC%"=="0" goto launch
if not "%RC%"=="10" goto end
%PY% -m installer install %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" goto install_failed
:launch
%PY% -m installer launch %*
set "RC=%ERRORLEVEL%"
goto end

:no_python
echo Trellis Desktop needs 64-bit Python 3.11 (3.12 works too), and none was found.
echo Install it from https://www.python.org/downloads/ (tick "Add python.exe to PATH"),
echo or in a terminal run:  winget install Python.Python.3.11
echo then start run.bat again. (TRELLIS_PYTHON may name a python.exe to use; or let run.bat download a
echo private one into .python\: start it in a console and answer y, or set TRELLIS_FETCH_PYTHON=1.)
set "RC=1"
goto end

:install_failed
echo Trellis Desktop could not be installed (exit status %RC%). The message above says why and what
echo to do; the full log is logs\installer.log. Start run.bat again when it is fixed.
goto end

:launcher_help
%PY% -m installer launch --help
exit /b 0

:end
rem Keep the window open after an error when started by a double click (TRELLIS_NO_PAUSE=1: never).
if not "%RC%"=="0" if not defined TRELLIS_NO_PAUSE pause
exit /b %RC%

rem :try_private -> PY=the newest .python\cpython-3.11.*\python.exe that works.
:try_private
rem (dir /a:d, not for /d: that skips hidden folders, as Wine shows every dot-folder)
for /f "delims=" %%D in ('dir /b /o:n /a:d ".python\cpython-3.11.*" 2^>nul') do if exist "%CD%\.python\%%D\python.exe" call :try "%CD%\.python\%%D\python.exe"
exit /b 0

rem :fetch_python -> installer\get_python.ps1 downloads uv and a private Python 3.11 (its messages say why not).
:fetch_python
set "PS=%SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe"
if not exist "%PS%" exit /b 0
"%PS%" -NoProfile -ExecutionPolicy Bypass -File "%CD%\installer\get_python.ps1" "%CD%"
if errorlevel 1 exit /b 0
call :try_private
exit /b 0

rem :try COMMAND... -> PY=COMMAND if it is a 64-bit Python 3.11 to 3.13.
:try
%* -c "import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14) and sys.maxsize > 2 ** 32))" >nul 2>&1
if errorlevel 1 exit /b 1
set "PY=%*"
exit /b 0
