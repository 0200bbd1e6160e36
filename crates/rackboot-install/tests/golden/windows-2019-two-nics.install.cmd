@echo off
rem rackboot: install Windows Server 2019 on node7.rack1.example.com
wpeinit
wpeutil WaitForNetwork
set tries=0
:mount
net use S: \\10.1.0.1\install\win
if not errorlevel 1 goto setup
set /a tries+=1
if %tries% geq 30 goto fail
ping -n 11 127.0.0.1 >nul
goto mount
:setup
S:\setup.exe /unattend:X:\Windows\System32\unattend.xml /noreboot
if errorlevel 1 goto fail
rem UEFI: boot Windows Boot Manager first from now on, so the reboots of
rem Setup go to the disk and not back into this installer.
for /f "tokens=3" %%a in ('reg query HKLM\System\CurrentControlSet\Control /v PEFirmwareType') do set fw=%%a
if "%fw%"=="0x2" bcdedit /set {fwbootmgr} displayorder {bootmgr} /addfirst
wpeutil reboot
:fail
echo rackboot: Windows installation failed; logs are in X:\Windows\Panther and X:\$WINDOWS.~BT
cmd /k
