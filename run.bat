@echo off
rem Trellis Desktop for Windows. The first run installs into .venv here; later runs start at once.
rem   run.bat [--cpu]                     start the app
rem   run.bat [--cpu] test [pytest args]  run the tests (installs the test tools too)
rem --cpu: PyPI's Windows torch is the CPU build, so today it changes nothing; the installer
rem issue will pick the CUDA wheel index when nvidia-smi shows a GPU, and keep CPU with --cpu.
setlocal
cd /d "%~dp0"

rem Keep the user's own Python setup out of the app; keep the pip config (mirrors, CI wheels).
set "PYTHONNOUSERSITE=1"
set "PIP_USER=0"
set "PIP_DISABLE_PIP_VERSION_CHECK=1"
set "PYTHONPATH="
set "PYTHONHOME="
set "VPY=.venv\Scripts\python.exe"
rem No quotes inside HASHPY, so it survives cmd's quoting in for /f.
set "HASHPY=import hashlib, pathlib, sys; print(hashlib.sha256(bytes().join(pathlib.Path(f).read_bytes() for f in sys.argv[1:])).hexdigest()[:16])"

rem Drop the leading --cpu / test from the arguments; the rest go to the app or to pytest.
set "MODE=ui"
set "ARGS=%*"
if /i not "%~1"=="--cpu" goto cpu_done
set "ARGS=%ARGS:*--cpu=%"
shift
:cpu_done
if /i not "%~1"=="test" goto mode_done
set "MODE=test"
set "ARGS=%ARGS:*test=%"
:mode_done

"%VPY%" -c "pass" >nul 2>&1 && goto have_venv
set "PY="
for %%v in (3.11 3.12) do if not defined PY py -%%v -c "pass" >nul 2>&1 && set "PY=py -%%v"
if not defined PY python -c "import sys; sys.exit(sys.version_info < (3, 11))" >nul 2>&1 && set "PY=python"
if not defined PY (
    echo Trellis Desktop needs Python 3.11 ^(64-bit^). Install it from https://www.python.org/downloads/
    echo or run: winget install Python.Python.3.11  -- then start run.bat again.
    goto fail
)
echo Creating .venv with %PY%
if exist .venv rmdir /s /q .venv
%PY% -m venv .venv || goto fail
:have_venv

rem Stamp name = hash of the requirements files, so editing one triggers a re-install.
for /f "delims=" %%h in ('%VPY% -c "%HASHPY%" requirements_1.txt requirements_2.txt') do set "APP_STAMP=.venv\.installed-%%h"
if exist "%APP_STAMP%" goto app_installed
del /q .venv\.installed-* >nul 2>&1
echo Installing torch and the app's packages into .venv; the first run takes a few minutes...
call :pip -r requirements_1.txt || goto fail
call :pip -r requirements_2.txt || goto fail
type nul > "%APP_STAMP%"
:app_installed

if not "%MODE%"=="test" goto launch
for /f "delims=" %%h in ('%VPY% -c "%HASHPY%" requirements_1.txt requirements_2.txt requirements_test.txt') do set "TEST_STAMP=.venv\.installed-%%h"
if exist "%TEST_STAMP%" goto run_tests
rem The app's pins are constraints here: a test tool may not move them.
call :pip -r requirements_test.txt -c requirements_1.txt -c requirements_2.txt || goto fail
type nul > "%TEST_STAMP%"
:run_tests
rem pytest's exit status is ours. "No tests collected" is 5, so it fails CI like any other error.
"%VPY%" -m pytest %ARGS%
exit /b %ERRORLEVEL%

:launch
"%VPY%" -m desktop ui %ARGS%
set "RC=%ERRORLEVEL%"
rem Keep the window open after a message when started by a double click.
if not "%RC%"=="0" pause
exit /b %RC%

rem Wheels only: nothing may need a compiler. One retry covers a dropped download.
:pip
"%VPY%" -m pip install --only-binary=:all: %*
if not errorlevel 1 exit /b 0
echo pip failed; retrying once...
"%VPY%" -m pip install --only-binary=:all: %*
exit /b %ERRORLEVEL%

:fail
echo Install failed (see the message above). Check the network, then run run.bat again.
pause
exit /b 1
